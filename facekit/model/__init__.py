"""The model: backbone → neck → embedding (the basic model) → head."""

from facekit.model.build import (BASIC_MODEL, BACKBONE_LAYER, EMBEDDING_LAYER, FaceModels,
                                 build_basic_model, build_model, build_training_model,
                                 embedding_model, freeze, head_layer, init_basic_model,
                                 load_model, model_file)

__all__ = ["BASIC_MODEL", "BACKBONE_LAYER", "EMBEDDING_LAYER", "FaceModels",
           "build_basic_model", "build_model", "build_training_model", "embedding_model",
           "freeze", "head_layer", "init_basic_model", "load_model", "model_file"]
