"""Tensor rows in; each answer reports the row's model output and how many rows shared its batch.
A row holding 666 poisons the batch (ValueError), to show that only its own request fails."""

from isvc_runtime.handlers.tensor import TensorHandler


class BatchReportHandler(TensorHandler):
    def preprocess(self, data):
        tensor = super().preprocess(data)
        if (tensor == 666).any():
            raise ValueError("poisoned row")
        return tensor

    def postprocess(self, data):
        rows = len(data)
        return [{"value": float(row[0]), "batch_rows": rows} for row in data.tolist()]
