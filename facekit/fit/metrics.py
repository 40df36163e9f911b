"""The training accuracy, for heads whose scores carry more than the classes."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="facekit")
class ClassAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Top-1 accuracy over the first ``classes`` score columns: a head that serves a
    norm-aware loss appends the embedding norm as one more column."""

    def __init__(self, classes: int, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.classes = int(classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred[..., :self.classes], sample_weight)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}
