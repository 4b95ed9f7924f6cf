"""Rows are lists of token ids; the model's input is an int64 tensor [N, tokens]."""

import torch
from isvc_runtime.handlers.base import BaseHandler, row_payload, stack_rows, to_tensor


class TokenClassifier(BaseHandler):
    def preprocess(self, data):
        return stack_rows([to_tensor(row_payload(row), torch.int64) for row in data]).to(self.device)

    def postprocess(self, data):
        return data.argmax(1).tolist()
