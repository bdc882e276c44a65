"""``sdlora-ui`` (``make ui``): serve the page on http://127.0.0.1:7860.

    sdlora-ui                                   # this machine only, the current folder
    sdlora-ui --root /data --root /models       # also read/write under /data and /models
    sdlora-ui --listen --auth me:secret         # reachable from the network: a password is required
    sdlora-ui --listen 0.0.0.0 --auth-file users.txt --port 8080

Never a public share link unless ``--share`` is given (with ``--auth``). See :mod:`sdlora.ui.security`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.versions import version_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdlora-ui", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--listen", nargs="?", const="0.0.0.0", default=None, metavar="ADDRESS",
                   help="listen on ADDRESS (0.0.0.0 without one) instead of 127.0.0.1; needs --auth")  # fmt: skip
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", default=None, help="user:password (several: comma-separated)")
    p.add_argument("--auth-file", default=None, help="a file with one user:password per line")
    p.add_argument("--root", action="append", default=[], metavar="FOLDER",
                   help="a folder the server may read and write (repeatable; default: the current folder)")  # fmt: skip
    p.add_argument("--project", default=None, help="the sdlora folder holding train.py and conf/ (default: found)")
    p.add_argument("--share", action="store_true", help="a public Gradio share link (needs --auth)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--version", action="version", version=version_text())
    return p


def project_folder(value: str | None) -> Path:
    """The folder with ``train.py`` and ``conf/``: ``--project``, the current folder, or the repository."""
    for candidate in [Path(value)] if value else [Path.cwd(), Path(__file__).resolve().parents[3]]:
        if (candidate / "train.py").is_file() and (candidate / "conf" / "train.yaml").is_file():
            return candidate.resolve()
    raise SdloraError("no sdlora project here (train.py and conf/): run sdlora-ui in the repository or give --project")


def serve(args: argparse.Namespace):
    """Check the binding, build the page and start serving (returns Gradio's app; blocks unless testing)."""
    from sdlora.ui.security import Roots, check_binding, parse_auth

    auth = parse_auth(args.auth, args.auth_file)
    check_binding(args.listen is not None, auth, args.share)
    project = project_folder(args.project)
    roots = Roots.of(args.root or [Path.cwd()], project)
    from sdlora.ui.app import CSS, build_page, make_app
    from sdlora.utils.quiet import quiet_third_party

    quiet_third_party()
    page = build_page(make_app(project, roots))
    page.queue(default_concurrency_limit=4)
    return page.launch(server_name=args.listen or "127.0.0.1", server_port=args.port, auth=auth, share=args.share,
                       inbrowser=not args.no_browser, allowed_paths=[str(f) for f in roots.folders],
                       show_error=True, footer_links=["gradio", "settings"], css=CSS)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the web UI needs the "ui" extra: pip install -e ".[ui]"', file=sys.stderr)
        return 1
    try:
        serve(args)
    except SdloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
