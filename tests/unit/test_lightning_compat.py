"""The Lightning internals sdlora relies on (src/sdlora/lightning_compat.py) still behave as it expects: this test
fails on a Lightning upgrade that changes them, before any run does."""

from __future__ import annotations

import inspect

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from sdlora.lightning_compat import (
    FSDPModelSetup,
    batches_processed,
    is_last_batch,
    logs_this_step,
    optimizer_to_device,
)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Progress(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append((batches_processed(trainer), is_last_batch(trainer)))


def test_the_loop_progress_counts_processed_batches_and_flags_the_last(tmp_path):
    progress = _Progress()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[progress],
                        default_root_dir=str(tmp_path))  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(3, 2)), batch_size=1)
    trainer.fit(_Tiny(), train_dataloaders=data)
    assert progress.seen == [(1, False), (2, False), (3, True)] * 2


def test_fsdp_wraps_the_model_through_setup_model():
    assert "_setup_model" in FSDPStrategy.__dict__
    assert "self._setup_model(" in inspect.getsource(FSDPStrategy.setup)  # Lightning's setup calls the hook
    assert FSDPModelSetup._setup_model is not FSDPStrategy._setup_model
    assert list(inspect.signature(FSDPStrategy._setup_model).parameters) == ["self", "model"]


def test_optimizer_state_moves_to_a_device():
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([param])
    param.grad = torch.ones(2)
    optimizer.step()
    optimizer_to_device(optimizer, torch.device("cpu"))
    assert optimizer.state[param]["exp_avg"].device.type == "cpu"


class _LogsOnWrittenSteps(_Tiny):
    """Logs only where ``logs_this_step`` says, from ``on_before_optimizer_step`` (as sdlora's module does)."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[bool] = []

    def on_before_optimizer_step(self, optimizer) -> None:
        self.decisions.append(logs_this_step(self.trainer))
        if self.decisions[-1]:
            self.log("value", float(len(self.decisions)), on_step=True, on_epoch=False)


class _Recorder(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[int, float]] = []

    name, version = "recorder", 0

    @property
    def experiment(self):
        return None

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "value" in metrics:
            self.steps.append((step, metrics["value"]))


def test_logs_this_step_is_true_exactly_on_the_steps_the_logger_writes(tmp_path):
    module, recorder = _LogsOnWrittenSteps(), _Recorder()
    trainer = L.Trainer(max_steps=7, accelerator="cpu", logger=recorder, log_every_n_steps=3,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(torch.randn(20, 2)), batch_size=1))
    assert [i + 1 for i, d in enumerate(module.decisions) if d] == [3, 6]
    assert recorder.steps == [(2, 3.0), (5, 6.0)]  # Lightning's step of the n-th optimizer step is n - 1
