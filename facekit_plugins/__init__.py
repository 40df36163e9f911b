"""facekit's built-in plugins, installed as ``facekit_plugins``.

They register through the ``facekit`` entry-point group exactly as a
third-party package does; the Keras objects they build live in
``keras_layers`` and ``keras_losses`` and are imported only when needed.
"""
