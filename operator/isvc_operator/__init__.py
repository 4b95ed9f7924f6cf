"""The InferenceService operator: reconciles serving.kubeflow.org/v1beta1 InferenceServices into Knative Services."""

__version__ = "0.1.0"
