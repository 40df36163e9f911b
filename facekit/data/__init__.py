"""Data: where training images come from and how they reach the model.

``sources`` (identity folders, packed shards, insightface ``.rec``) → ``index``
(the cached, verified list of images) → ``split`` (validation) → ``pipeline``
(tf.data, decoding) and ``augment`` (layers of the training model);
``recordio`` reads ``.rec`` files; ``shards``, ``prepare`` and ``demo`` write data.
"""
