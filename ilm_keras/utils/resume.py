"""A `fit` that resumes exactly where a killed one stopped, mid-epoch too.

`keras.callbacks.BackupAndRestore` (Keras 3.15, JAX and TensorFlow alike)
cannot resume a fit exactly:

- With `save_freq=<batches>` it records the epoch and the batch, but on
  restore it sets the epoch only: the interrupted epoch starts again at its
  first batch, on weights that already learned from the batches before the
  backup, and the data iterator starts again from the beginning of the data.
- After a restore it writes epoch 0 into its mid-epoch backups until the
  first epoch ends, so a second interruption restarts from epoch 0.
- It saves the weights and the optimizer, not the random state of dropout or
  sampling (`keras.random.SeedGenerator`s), so even at an epoch boundary the
  resumed run draws other masks than the uninterrupted one.
- It writes its files in place: a kill during a save leaves a truncated
  `.weights.h5` that the next run cannot load (an `OSError` from `h5py`).

`resumable_fit` replaces it. Every `TrainingBackup.every_steps` steps and at
every epoch end it saves, as one file written atomically, the model's
variables (random-seed states included), the optimizer's, the metrics'
(the epoch's running loss) and the number of steps done. A rerun restores
them, asks the caller for the training input from that step on
(`make_input(start_step)`, e.g. `dataset.skip(start_step)`), starts `fit` at
the interrupted epoch and ends that epoch after its remaining steps. With
deterministic data and kernels (`seed_everything`) the resumed fit then
gives the same weights, to the bit, as one that was never interrupted.
"""

import json
import os
import shutil

import keras
import numpy as np

from ilm_keras.utils import files

STATE_FILE = "state.npz"
_FORMAT = 1


class TrainingBackup:
    """Where and how often `resumable_fit` saves a fit's training state.

    Args:
        directory: a folder for this fit alone.
        every_steps: save every this many training steps (and at every
            epoch end); None or 0: at epoch ends only.
        log: print function for the "resumed" line.

    Example:
    ```python
    backup = TrainingBackup("out/backup/phase2", every_steps=200)
    resumable_fit(model, lambda start: (dataset.skip(start), 500),
                  epochs=3, backup=backup)
    backup.clear()  # once the fit's result is stored elsewhere
    ```
    """

    def __init__(self, directory, every_steps=200, log=print):
        self.directory = str(directory)
        self.every_steps = int(every_steps or 0)
        self.log = log

    @property
    def path(self):
        return os.path.join(self.directory, STATE_FILE)

    def _delete_hint(self):
        return dict(
            delete=[self.directory],
            consequence="this fit then starts again from its first step",
        )

    def read(self):
        """The saved state, or None when there is none.

        Returns:
            `(meta, arrays)`: the metadata dict and the list of arrays.

        Raises:
            CorruptFileError: the state file cannot be read, or a backup
                that this code does not write (Keras' `BackupAndRestore`)
                is there instead.
        """
        keras_backup = os.path.join(self.directory, "training_metadata.json")
        if not os.path.exists(self.path):
            if os.path.exists(keras_backup):
                raise files.CorruptFileError(
                    keras_backup,
                    "a keras.callbacks.BackupAndRestore backup, which "
                    "cannot resume this fit exactly",
                    **self._delete_hint(),
                )
            return None
        arrays = files.read_npz(self.path, **self._delete_hint())
        try:
            meta = json.loads(str(arrays.pop("meta")))
            count = len(meta["variables"])
            values = [arrays[f"a{i}"] for i in range(count)]
            for key in ("step", "metrics", "epochs", "steps_per_epoch"):
                int(meta[key])
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
        except (KeyError, ValueError, TypeError) as error:
            raise files.CorruptFileError(
                self.path, f"{type(error).__name__}: {error}",
                **self._delete_hint(),
            ) from error
        return meta, values

    def write(self, meta, values):
        """Saves `meta` (a JSON-able dict) and `values` (arrays), atomically."""
        arrays = {f"a{i}": v for i, v in enumerate(values)}
        arrays["meta"] = np.array(json.dumps(dict(meta, format=_FORMAT)))
        files.write_npz(self.path, **arrays)

    def clear(self):
        """Deletes the backup (call it once the fit's result is stored)."""
        if os.path.exists(self.directory):
            shutil.rmtree(self.directory)


def _state_variables(model):
    """The variables a resumed fit needs, in groups: the model's (weights and
    random-seed states), the optimizer's and the metrics'."""
    optimizer = getattr(model, "optimizer", None)
    return {
        "model": list(model.variables),
        "optimizer": list(optimizer.variables) if optimizer is not None else [],
        "metrics": list(model.metrics_variables),
    }


def _describe(variable):
    return [list(variable.shape), str(variable.dtype)]


def _to_numpy(variable):
    value = keras.ops.convert_to_numpy(variable.value)
    if value.dtype.kind not in "biuf":  # e.g. bfloat16: stored as its bits
        value = value.view(f"uint{8 * value.dtype.itemsize}")
    return value


def _assign(variable, value):
    dtype = keras.backend.standardize_dtype(variable.dtype)
    if value.dtype.kind == "u" and dtype not in ("uint8", "uint16", "uint32",
                                                 "uint64"):
        import ml_dtypes

        value = value.view(getattr(ml_dtypes, dtype, dtype))
    variable.assign(value)


class _Restore(keras.callbacks.Callback):
    """First callback of a resumed fit: restores the saved state, and lets
    the next epoch run after the interrupted epoch was cut short."""

    def __init__(self, backup, saved, start_step, steps_per_epoch, epochs):
        super().__init__()
        self.backup = backup
        self.saved = saved
        self.start_step = start_step
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.cut = False

    def on_train_begin(self, logs=None):
        if self.saved is None:
            return
        meta, values = self.saved
        model = self.model
        if not model.built:
            raise ValueError(
                f"resumable_fit needs a built model to restore "
                f"{self.backup.path} into; {model.name} is not built: build "
                "it (e.g. call it on a batch) before fitting."
            )
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        groups = _state_variables(model)
        variables = groups["model"] + groups["optimizer"]
        if meta["variables"][:len(variables)] != [
            _describe(v) for v in variables
        ] or len(meta["variables"]) != len(variables) + meta["metrics"]:
            raise files.CorruptFileError(
                self.backup.path,
                "it holds the training state of another model, optimizer or "
                "configuration",
                **self.backup._delete_hint(),
            )
        for variable, value in zip(variables, values):
            _assign(variable, value)
        epoch, step = divmod(self.start_step, self.steps_per_epoch)
        total = self.epochs * self.steps_per_epoch
        if self.start_step >= total:
            where = "the end of the fit"
        else:
            where = (f"epoch {epoch + 1}/{self.epochs}, step {step}/"
                     f"{self.steps_per_epoch}")
        self.backup.log(
            f"{self.backup.directory}: resumed at {where} (training step "
            f"{self.start_step} of {total})"
        )

    def on_epoch_begin(self, epoch, logs=None):
        # `fit` resets the metrics before this call: give the interrupted
        # epoch back its running means, so its logs cover the whole epoch.
        # Where the compiled metrics are built by the first step (Keras on
        # TensorFlow), they are not there yet and the epoch's logs cover
        # the steps after the resume only.
        if self.saved is None or self.start_step % self.steps_per_epoch == 0:
            return
        if epoch != self.start_step // self.steps_per_epoch:
            return
        meta, values = self.saved
        count = meta["metrics"]
        metrics = _state_variables(self.model)["metrics"]
        saved = meta["variables"][len(values) - count:]
        if count and [_describe(v) for v in metrics] == saved:
            for variable, value in zip(metrics, values[len(values) - count:]):
                _assign(variable, value)

    def on_epoch_end(self, epoch, logs=None):
        if self.cut:  # our stop ended the epoch, not the whole fit
            self.model.stop_training = False
            self.cut = False


class _Save(keras.callbacks.Callback):
    """Last callback of the fit: saves the state every `every_steps` steps
    and at every epoch end (after every other callback's `on_epoch_end`, so
    what they record about the epoch is on disk before the epoch counts as
    done), and ends the interrupted epoch after its remaining steps."""

    def __init__(self, backup, restore, start_step, steps_per_epoch, epochs):
        super().__init__()
        self.backup = backup
        self.restore = restore
        self.start_step = start_step
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.epoch = 0

    def _step(self, batch):
        """Training steps done after batch `batch` of the current epoch."""
        first_epoch, offset = divmod(self.start_step, self.steps_per_epoch)
        if self.epoch != first_epoch:
            offset = 0
        return self.epoch * self.steps_per_epoch + offset + batch + 1

    def _save(self, step):
        groups = _state_variables(self.model)
        variables = groups["model"] + groups["optimizer"] + groups["metrics"]
        self.backup.write(
            {
                "step": int(step),
                "steps_per_epoch": int(self.steps_per_epoch),
                "epochs": int(self.epochs),
                "variables": [_describe(v) for v in variables],
                "metrics": len(groups["metrics"]),
            },
            [_to_numpy(v) for v in variables],
        )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self._step(batch)
        end = (self.epoch + 1) * self.steps_per_epoch
        if step > end:
            raise RuntimeError(
                f"Epoch {self.epoch} ran past its last step ({step} > {end}).")
        if step == end:  # saved by `on_epoch_end`
            first_epoch, offset = divmod(self.start_step, self.steps_per_epoch)
            if (offset and self.epoch == first_epoch
                    and not self.model.stop_training):
                # The interrupted epoch's last step: end the epoch here
                # (`fit` would count `steps_per_epoch` steps from the resume).
                self.model.stop_training = True
                self.restore.cut = True
            return
        if self.backup.every_steps and step % self.backup.every_steps == 0:
            self._save(step)

    def on_epoch_end(self, epoch, logs=None):
        self._save((epoch + 1) * self.steps_per_epoch)


def resumable_fit(model, make_input, epochs, backup=None, callbacks=None,
                  verbose="auto", fit=None):
    """`model.fit` that resumes from `backup` where a killed run stopped.

    A rerun after a kill (at any moment, mid-epoch too) restores the last
    saved state (weights, random-seed states, optimizer, the epoch's running
    metrics), starts the data at the first step not yet trained
    (`make_input(start_step)`) and ends the interrupted epoch after its
    remaining steps; the fit then goes on as the uninterrupted one, and with
    deterministic data and kernels ends with the same weights. A backup of
    a finished fit restores its final state (no step runs, callbacks'
    `on_train_end` still do).

    The callbacks see one difference: the interrupted epoch's batches are
    numbered from 0 again (`on_train_batch_*`), so it shows fewer than
    `steps_per_epoch` batches.

    Args:
        model: a compiled Keras model.
        make_input: callable `start_step -> (x, steps_per_epoch)`: the
            training input (`fit`'s `x`) whose first batch is the one of
            training step `start_step` (steps count from 0 over the whole
            fit; one batch per step), and the steps of every epoch. The
            same `(epochs, steps_per_epoch)` must come back on a rerun.
        epochs: int.
        backup: a `TrainingBackup`, or None for a plain `fit`.
        callbacks: more Keras callbacks.
        verbose: `fit`'s `verbose`.
        fit: the `fit` to call (default `model.fit`), e.g.
            `functools.partial(keras.Model.fit, model)`.

    Returns:
        `fit`'s `History` (of the epochs run by this call).

    Raises:
        CorruptFileError: the backup cannot be read or does not match the
            model or `steps_per_epoch`; the message names what to delete.
    """
    fit = fit or model.fit
    callbacks = list(callbacks or [])
    if backup is None:
        x, steps_per_epoch = make_input(0)
        return fit(x=x, epochs=epochs, steps_per_epoch=steps_per_epoch,
                   callbacks=callbacks, shuffle=False, verbose=verbose)
    saved = backup.read()
    start_step = int(saved[0]["step"]) if saved else 0
    x, steps_per_epoch = make_input(start_step)
    if not steps_per_epoch or int(steps_per_epoch) < 1:
        raise ValueError(
            f"make_input must give steps_per_epoch >= 1; got {steps_per_epoch}.")
    steps_per_epoch = int(steps_per_epoch)
    if saved and (saved[0]["steps_per_epoch"], saved[0]["epochs"]) != (
        steps_per_epoch, int(epochs)
    ):
        raise files.CorruptFileError(
            backup.path,
            f"it is a fit of {saved[0]['epochs']} epochs of "
            f"{saved[0]['steps_per_epoch']} steps, this one has {epochs} of "
            f"{steps_per_epoch}",
            **backup._delete_hint(),
        )
    restore = _Restore(backup, saved, start_step, steps_per_epoch, epochs)
    save = _Save(backup, restore, start_step, steps_per_epoch, epochs)
    return fit(
        x=x,
        epochs=epochs,
        initial_epoch=start_step // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=[restore, *callbacks, save],
        shuffle=False,
        verbose=verbose,
    )
