"""The project's OmegaConf resolvers, which ``conf/hydra/default.yaml`` uses: a training run given another
run's checkpoint (``ckpt_path=<run>/checkpoints/NAME.ckpt``) runs in that run's directory. Registered by
:func:`register_resolvers`, which the entry points call before Hydra composes their config."""

from pathlib import Path

from omegaconf import OmegaConf

from datnet.runs.config import checkpoint_run_dir


def resume_run_dir(task_name: str, ckpt_path: str | None, default: str) -> str:
    """Hydra's ``run.dir``: a training run resuming another run's checkpoint runs in that run's directory."""
    run = checkpoint_run_dir(ckpt_path) if task_name == "train" else None
    return str(run) if run is not None else default


def resume_output_subdir(task_name: str, ckpt_path: str | None, output_dir: str, stamp: str) -> str:
    """Hydra's ``output_subdir``: ``.hydra``, or ``.hydra/resume-<stamp>`` when a training run resumes a
    checkpoint of the run in its ``output_dir``, whose own ``.hydra/config.yaml`` is the config it resumes
    with."""
    run = checkpoint_run_dir(ckpt_path) if task_name == "train" else None
    return f".hydra/resume-{stamp}" if run is not None and run == Path(output_dir).resolve() else ".hydra"


def register_resolvers() -> None:
    """Registers ``datnet.resume_run_dir`` and ``datnet.resume_output_subdir`` (again: replaced)."""
    OmegaConf.register_new_resolver("datnet.resume_run_dir", resume_run_dir, replace=True)
    OmegaConf.register_new_resolver("datnet.resume_output_subdir", resume_output_subdir, replace=True)
