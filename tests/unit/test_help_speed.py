"""``train.py --help`` shares one config repository between Hydra's group look-ups (sdlora.config.help_speed): the
page is the same as Hydra's own."""

from __future__ import annotations

import subprocess
import sys

from sdlora.config.help_speed import share_help_repository
from tests.helpers.config import ROOT

UNPATCHED = (  # Hydra's own: the method marked as shared already, so train.py leaves it alone
    "import runpy, sys; from hydra._internal.config_loader_impl import ConfigLoaderImpl as C; "
    "C._parse_overrides_and_create_caching_repo._sdlora_shared = True; sys.argv = ['train.py', '{flag}']; "
    "runpy.run_path('train.py', run_name='__main__')"
)


def test_only_help_is_changed():
    assert share_help_repository(["data.train_dir=x", "dry_run=true"]) is False


def test_the_help_pages_are_hydras():
    for flag in ("--help", "--hydra-help"):
        shared = subprocess.run([sys.executable, "train.py", flag], cwd=ROOT, capture_output=True, text=True)
        plain = subprocess.run([sys.executable, "-c", UNPATCHED.format(flag=flag)], cwd=ROOT, capture_output=True,
                               text=True)  # fmt: skip
        assert shared.returncode == plain.returncode == 0, shared.stderr + plain.stderr
        assert shared.stdout == plain.stdout and "== Configuration groups ==" in shared.stdout
