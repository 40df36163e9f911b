"""Partial FC: class centers sharded over the replicas, a sample of them per step.

insightface's answer to classifiers of 10^5-10^7 identities (An et al., "Partial FC",
ICCV-W 2021), on ``tf.distribute``.  Replica r of R holds the rows of classes
[start_r, start_r + size_r) as the local copy of a sync-on-read variable, with
the optimizer state of those rows next to it: a replica's classifier memory is
its shard.  Each step:

1. the embeddings and labels of the global batch are gathered from every replica;
2. each replica samples ``K`` rows of its shard: every class of the batch that it
   holds, then uniformly among the others (``sample_rate`` of the shard);
3. it computes the cosines of the whole batch against its sampled rows only, and
   hands the loss a score matrix whose column 0 is each sample's target cosine
   (all-reduced from the replica that holds it) and whose other columns are its
   sampled negatives, so every margin loss that writes its logits from cosines
   works unchanged;
4. the softmax normalizer spans the sampled classes of all replicas: the maximum
   and the sum of exponentials are reduced across replicas, never the logits;
5. the gradients of the sampled rows update only those rows (and their optimizer
   state, "lazily", as Partial FC and LazyAdam do), by the run's optimizer rule;
   the rest of the model is updated by the Keras optimizer as usual.

Checkpoints hold the whole matrix and its optimizer state in class order,
whatever the number of replicas; loading re-shards them for the replicas at hand.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from facekit.errors import FacekitError
from facekit.model.losses import MarginLoss, bind_loss_state

# The optimizer state each rule keeps per row, by the run's optimizer name.
ROW_SLOTS = {"sgd": ("momentum",), "adam": ("m", "v"), "adamw": ("m", "v"),
             "adamax": ("m", "u")}
_NEGATIVE = -1e9  # the logit of a column that is not a negative of its sample


def shard_range(num_classes: int, replicas: int, replica):
    """(start, size) of replica ``replica``'s classes: sizes differ by at most one."""
    base, extra = divmod(num_classes, replicas)
    if isinstance(replica, int):
        return base * replica + min(replica, extra), base + int(replica < extra)
    start = base * replica + tf.minimum(replica, extra)
    return start, base + tf.cast(replica < extra, tf.int32)


def sample_size(num_classes: int, replicas: int, batch: int, rate: float) -> int:
    """Rows each replica samples per step: ``rate`` of a shard, never fewer than the
    global batch (every class of the batch must fit), never more than a shard."""
    rows = -(-num_classes // replicas)
    return min(rows, max(int(np.ceil(rate * rows)), batch))


def optimizer_rule(optimizer) -> str:
    """The row-update rule that matches a Keras optimizer (inside a loss scaler)."""
    from facekit.fit.optimizers import OPTIMIZER_CLASSES

    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    for name, cls in OPTIMIZER_CLASSES.items():
        if type(optimizer) is cls:  # exactly: AdamW is an Adam
            return name
    raise FacekitError(f"The partial-fc head updates its class centers itself and knows the "
                       f"optimizers {', '.join(ROW_SLOTS)}, not {type(optimizer).__name__}.")


def _replica():
    """(replica context, this replica's index, number of replicas)."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    index = context.replica_id_in_sync_group if replicas > 1 else 0
    return context, index, replicas


def _all_gather(context, value):
    return value if context.num_replicas_in_sync == 1 else context.all_gather(value, axis=0)


def _all_sum(context, value):
    return value if context.num_replicas_in_sync == 1 else context.all_reduce("sum", value)


def _all_max(context, value):
    """Element-wise maximum over replicas (all_reduce has no MAX): gathered, reduced."""
    if context.num_replicas_in_sync == 1:
        return value
    stacked = context.all_gather(value[None], axis=0)
    return tf.reduce_max(stacked, axis=0)


def _scatter(variable, index, rows) -> None:
    """Write ``rows`` at ``index`` of this replica's copy of ``variable`` (sync-on-read
    variables have no scatter_update; their handle in a replica is the local copy)."""
    tf.raw_ops.ResourceScatterUpdate(resource=variable.handle, indices=index, updates=rows)


@keras.saving.register_keras_serializable(package="facekit")
class PartialFC(keras.layers.Layer):
    """The ``partial-fc`` head: NormDense's cosines, with its class centers sharded
    over the replicas and sampled each step (see the module's description).

    It never outputs a full cosine matrix: the training model
    (:class:`PartialFCModel`) asks it for a step's loss and updates its rows.
    """


    def __init__(self, units, *, sample_rate, normalize_embedding, append_norm, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.units, self.sample_rate = int(units), float(sample_rate)
        self.normalize_embedding, self.append_norm = bool(normalize_embedding), bool(append_norm)
        self.seed = int(seed)
        self.slots, self.rule, self._pending, self._loaded = {}, None, {}, False

    # ---- the shards -------------------------------------------------------------
    def build(self, input_shape):
        # the strategy whose replicas hold the shards (read and written from any scope)
        self._strategy = tf.distribute.get_strategy()
        self.replicas = self._strategy.num_replicas_in_sync
        self.rows = -(-self.units // self.replicas)
        self.embedding_size = int(input_shape[-1])
        self.kernel = self._shard_variable("kernel")
        # glorot-normal over (embedding, classes), as NormDense; each shard its own draw
        stddev = float(np.sqrt(2.0 / (self.embedding_size + self.units)))
        self._per_replica(lambda r: self.kernel.assign(tf.random.stateless_normal(
            (self.rows, self.embedding_size), seed=[self.seed, r], stddev=stddev)))

    def _shard_variable(self, name):
        # On several replicas, each replica's copy of a sync-on-read variable is its own
        # shard; on one device it is a plain variable.  Not trainable: the Keras optimizer
        # would all-reduce it; apply_rows updates it.
        with tf.init_scope():
            return tf.Variable(tf.zeros((self.rows, self.embedding_size)), name=name,
                               trainable=False,
                               synchronization=tf.VariableSynchronization.ON_READ,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _per_replica(self, assign):
        """Run ``assign(replica index)`` in each replica (from the cross-replica context)."""
        if self.replicas == 1:
            assign(0)
            return
        with self._strategy.scope():
            self._strategy.run(lambda: assign(tf.distribute.get_replica_context()
                                    .replica_id_in_sync_group))

    def full_value(self, variable) -> np.ndarray:
        """The whole (classes, embedding) matrix of a sharded variable, in class order."""
        if self.replicas == 1:
            return variable.numpy()[:self.units]
        strategy = self._strategy
        local = strategy.experimental_local_results(variable)
        if len(local) == self.replicas:  # every shard on this machine: no collective
            stacked = np.concatenate([part.numpy() for part in local])
        else:  # several machines: every worker gathers (each saves the same checkpoint)
            logger = tf.get_logger()
            level = logger.level
            logger.setLevel("ERROR")  # TensorFlow traces a new gather each call, and says so
            try:
                with strategy.scope():
                    stacked = strategy.gather(strategy.run(lambda: tf.identity(variable)),
                                              axis=0).numpy()
            finally:
                logger.setLevel(level)
        parts = []
        for r in range(self.replicas):
            _, size = shard_range(self.units, self.replicas, r)
            parts.append(stacked[r * self.rows: r * self.rows + size])
        return np.concatenate(parts)

    def assign_full(self, variable, value) -> None:
        """Re-shard a whole (classes, embedding) matrix into ``variable``."""
        value = np.asarray(value, np.float32)
        if value.shape != (self.units, self.embedding_size):
            raise FacekitError(f"partial-fc expected a ({self.units}, {self.embedding_size}) "
                               f"matrix, got {value.shape}.")
        padded = np.zeros((self.replicas * self.rows, self.embedding_size), np.float32)
        for r in range(self.replicas):
            start, size = shard_range(self.units, self.replicas, r)
            padded[r * self.rows: r * self.rows + size] = value[start:start + size]
        padded = tf.constant(padded)
        self._per_replica(lambda r: variable.assign(padded[r * self.rows:(r + 1) * self.rows]))

    def create_slots(self, optimizer) -> None:
        """The optimizer state of the rows, for the run's optimizer (at compile)."""
        rule = optimizer_rule(optimizer)
        if rule == self.rule:
            return
        self.rule = rule
        self.slots = {name: self._shard_variable(f"slot_{name}") for name in ROW_SLOTS[rule]}
        for name, value in self._pending.items():
            if name in self.slots:
                self.assign_full(self.slots[name], value)
        self._pending = {}

    # Saved and loaded whole, in class order: independent of the number of replicas.
    def save_own_variables(self, store):
        store["kernel"] = self.full_value(self.kernel)
        for name, variable in self.slots.items():
            store[f"slot_{name}"] = self.full_value(variable)

    def load_own_variables(self, store):
        keys = list(store.keys())
        if not keys:  # Keras visits a subclassed model's head twice: as .head and in .layers
            if not self._loaded:  # its outcome is the last visit's: an earlier failure stays
                raise FacekitError("The saved model holds no partial-fc class centers.")
            return
        self.assign_full(self.kernel, store["kernel"])
        self._loaded = True
        for key in keys:
            if key.startswith("slot_"):
                name = key[len("slot_"):]
                if name in self.slots:
                    self.assign_full(self.slots[name], store[key])
                else:  # restored before compile creates the slots
                    self._pending[name] = np.asarray(store[key])

    def get_weights(self):
        return [self.full_value(self.kernel)] + [self.full_value(v) for v in self.slots.values()]

    def set_weights(self, weights):
        self.assign_full(self.kernel, weights[0])
        for variable, value in zip(self.slots.values(), weights[1:]):
            self.assign_full(variable, value)

    def count_params(self):
        return self.units * self.embedding_size

    # ---- a step ----------------------------------------------------------------
    def sample(self, labels, batch: int | None, rate: float, step):
        """This replica's sampled rows for a global batch of ``labels`` (``batch``: its
        static size, None if unknown): (row indices, which are real classes, a
        (batch, K) mask of each sample's positive column)."""
        _, replica, replicas = _replica()
        start, size = shard_range(self.units, replicas, replica)
        local = labels - start
        held = tf.logical_and(local >= 0, local < size)
        if batch is not None:
            k = sample_size(self.units, replicas, batch, rate)
        else:  # a last, smaller batch (validation): the same rule on its dynamic size
            k = tf.minimum(self.rows, tf.maximum(int(np.ceil(rate * self.rows)),
                                                 tf.shape(labels)[0]))
        if isinstance(k, int) and k >= self.rows:
            index = tf.range(self.rows)
        else:  # every positive (score 2), then the others by a uniform draw; never padding
            seed = tf.stack([tf.cast(self.seed, tf.int64) + 1,
                             tf.cast(step, tf.int64) * replicas + tf.cast(replica, tf.int64)])
            scores = tf.random.stateless_uniform((self.rows,), seed=seed)
            scores = tf.where(tf.range(self.rows) < size, scores, -1.0)
            positives = tf.boolean_mask(local, held)[:, None]
            scores = tf.tensor_scatter_nd_update(scores, positives,
                                                 tf.fill(tf.shape(positives)[:1], 2.0))
            index = tf.sort(tf.math.top_k(scores, k).indices)
        real = index < size
        positive = tf.logical_and(held[:, None], local[:, None] == index[None, :])
        return index, real, positive

    def step_loss(self, embeddings, labels, loss, rows, real, positive):
        """(per-sample loss over the sampled classes of all replicas, per-sample top-1
        hit) for the global batch; ``rows`` are this replica's sampled centers."""
        context, _, _ = _replica()
        norms = tf.norm(embeddings, axis=-1)
        x = tf.math.l2_normalize(embeddings, axis=-1) if self.normalize_embedding \
            else embeddings
        cosine = tf.matmul(x, tf.math.l2_normalize(rows, axis=-1), transpose_b=True)
        target = _all_sum(context, tf.reduce_sum(tf.where(positive, cosine, 0.0), axis=-1))
        scores = tf.concat([target[:, None], cosine], axis=-1)
        targets = tf.one_hot(tf.zeros_like(labels), tf.shape(scores)[-1])
        logits = loss.logits(targets, scores, norms if loss.needs_norm else None)
        negative = tf.logical_and(real[None, :], tf.logical_not(positive))
        others = tf.where(negative, logits[:, 1:], _NEGATIVE)
        target_logit = logits[:, 0]
        shift = tf.stop_gradient(tf.maximum(
            _all_max(context, tf.reduce_max(others, axis=-1)), target_logit))
        total = _all_sum(context, tf.reduce_sum(tf.exp(others - shift[:, None]), axis=-1))
        total += tf.exp(target_logit - shift)
        per_sample = tf.math.log(total) - (target_logit - shift)
        if loss.needs_norm:
            per_sample += loss.penalty(norms)
        best_other = _all_max(context, tf.reduce_max(
            tf.where(negative, cosine, -2.0), axis=-1))
        return per_sample, tf.cast(target > best_other, tf.float32)

    def apply_rows(self, index, gradient, optimizer) -> None:
        """The run optimizer's rule on the sampled rows only (weight decay first, as
        Keras applies it); their optimizer state is read and written at those rows."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        lr = tf.cast(inner.learning_rate, tf.float32)
        step = tf.cast(inner.iterations + 1, tf.float32)
        rows = tf.gather(self.kernel, index)
        if inner.weight_decay:
            rows -= rows * inner.weight_decay * lr
        slots = {name: tf.gather(variable, index) for name, variable in self.slots.items()}
        if self.rule == "sgd":
            m = slots["momentum"] * inner.momentum - gradient * lr
            rows += m * inner.momentum - gradient * lr if inner.nesterov else m
            new = {"momentum": m}
        elif self.rule in ("adam", "adamw"):
            b1, b2 = inner.beta_1, inner.beta_2
            alpha = lr * tf.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            m = slots["m"] + (gradient - slots["m"]) * (1 - b1)
            v = slots["v"] + (tf.square(gradient) - slots["v"]) * (1 - b2)
            rows -= m * alpha / (tf.sqrt(v) + inner.epsilon)
            new = {"m": m, "v": v}
        else:  # adamax
            b1, b2 = inner.beta_1, inner.beta_2
            m = slots["m"] + (gradient - slots["m"]) * (1 - b1)
            u = tf.maximum(b2 * slots["u"], tf.abs(gradient))
            rows -= lr * m / ((1 - b1 ** step) * (u + inner.epsilon))
            new = {"m": m, "u": u}
        _scatter(self.kernel, index, rows)
        for name, value in new.items():
            _scatter(self.slots[name], index, value)

    def training_model(self, basic_model, augmentation, state, distillation=None):
        """The training model around this head (facekit.model.build_training_model)."""
        return PartialFCModel(basic_model, self, augmentation, state, distillation)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units + int(self.append_norm))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "sample_rate": self.sample_rate,
                "normalize_embedding": self.normalize_embedding,
                "append_norm": self.append_norm, "seed": self.seed}


@keras.saving.register_keras_serializable(package="facekit")
class PartialFCModel(keras.Model):
    """image -> augmentation -> basic model (-> distillation) -> embedding; trained
    through a PartialFC head that sees the labels.  ``Model.fit`` runs its
    ``train_step`` in each replica."""

    def __init__(self, basic_model, head, augmentation=(), state=None, distillation=None,
                 **kwargs):
        kwargs.setdefault("name", "face_model")
        super().__init__(**kwargs)
        self.augmentation = list(augmentation)
        self.basic_model = basic_model
        self.head = head
        self.state = state
        self.distillation = distillation
        size = basic_model.output_shape[-1]
        if not head.built:
            head.build((None, size))
        if state is not None and not state.built:
            state.build((None, size))
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.built = True

    def call(self, images, training=False):
        return self._embed(images, training)[0]

    def _embed(self, images, training):
        """(embeddings, distillation loss or None) of a batch."""
        x = images
        for layer in self.augmentation:
            x = layer(x, training=training)
        embeddings = self.basic_model(x, training=training)
        if self.distillation is None:
            return embeddings, None
        return embeddings, self.distillation.loss_of(x, embeddings, training)

    def build(self, input_shape=None):
        self.built = True

    def compile(self, optimizer="adam", loss=None, **kwargs):
        kwargs.pop("metrics", None)  # the accuracy is the sampled classes' own
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        if loss is not None and not isinstance(loss, MarginLoss):
            raise FacekitError(
                f"The partial-fc head needs a loss that writes its logits from cosines "
                f"(a facekit.model.losses.MarginLoss); '{getattr(loss, 'name', loss)}' is "
                "not one.")
        if getattr(loss, "label_smoothing", 0.0):
            raise FacekitError("The partial-fc head does not apply label smoothing.")
        self.head.create_slots(self.optimizer)
        if loss is not None:
            loss.num_classes = self.head.units  # its scores cover a sample of the classes
            bind_loss_state(self, loss)  # a stateful loss keeps its state in this model

    def compile_from_config(self, config):  # a resumed checkpoint: loss and optimizer back
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        distilled = [self.distillation.tracker] if self.distillation is not None else []
        return [m for m in (getattr(self, "_loss_tracker", None), self.accuracy_tracker,
                            *distilled) if m]

    def _step(self, data, training: bool):
        images, labels = data[0], data[1]
        context, _, replicas = _replica()
        labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
        batch = labels.shape[0] * replicas if labels.shape[0] is not None else None
        all_labels = _all_gather(context, labels)
        index, real, positive = self.head.sample(  # validation too: never all classes
            all_labels, batch, self.head.sample_rate, self.optimizer.iterations)
        rows = tf.gather(self.head.kernel, index)
        with tf.GradientTape() as tape:
            tape.watch(rows)
            embeddings, distilled = self._embed(images, training)
            embeddings = tf.cast(embeddings, tf.float32)
            per_sample, hits = self.head.step_loss(_all_gather(context, embeddings),
                                                   all_labels, self.loss, rows, real, positive)
            loss = tf.reduce_mean(per_sample)
            if distilled is not None:  # this replica's images against the teacher
                loss = loss + distilled
            scaled = self.optimizer.scale_loss(loss / replicas) if training else None
        if training:
            weights = self.trainable_weights
            gradients = tape.gradient(scaled, weights + [rows])
            rows_gradient = gradients[-1] / self.optimizer.scale_loss(tf.constant(1.0))
            # a step the loss scaler skips (mixed float16 overflow) skips the rows too
            tf.cond(tf.reduce_all(tf.math.is_finite(rows_gradient)),
                    lambda: self.head.apply_rows(index, rows_gradient, self.optimizer),
                    lambda: None)
            self.optimizer.apply_gradients(zip(gradients[:-1], weights))
        self._loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(hits)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        return self._step(data, training=True)

    def test_step(self, data):
        return self._step(data, training=False)

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {"name": self.name, "basic_model": serialize(self.basic_model),
                "head": serialize(self.head),
                "augmentation": [serialize(layer) for layer in self.augmentation],
                "state": serialize(self.state) if self.state is not None else None,
                "distillation": (serialize(self.distillation)
                                 if self.distillation is not None else None)}

    @classmethod
    def from_config(cls, config):
        deserialize = keras.saving.deserialize_keras_object
        return cls(deserialize(config["basic_model"]), deserialize(config["head"]),
                   [deserialize(layer) for layer in config["augmentation"]],
                   deserialize(config["state"]) if config["state"] else None,
                   deserialize(config["distillation"]) if config.get("distillation")
                   else None, name=config.get("name", "face_model"))
