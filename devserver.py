"""Development launcher: embedded defaults, generated keys, then gunicorn (`scripts/dev.sh`), or
the ops command line against that same development service (`scripts/ops.sh`).

Keys are generated once and kept in the data folder, so every worker, every restart and the ops
command line use the same ones. Production never comes through here.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
from pathlib import Path

from config import ConfigError, load_settings


def load_or_create_keys(data_dir: Path) -> dict:
    """The development keys kept in data_dir/dev-keys.json, generated on first use."""
    path = data_dir / "dev-keys.json"
    if path.exists():
        return json.loads(path.read_text())
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = {"WIDGET_API_KEY": secrets.token_urlsafe(32), "ADMIN_API_KEY": secrets.token_urlsafe(32)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(keys, file)
    return keys


def use_development_defaults() -> tuple[Path, list[str]]:
    """Set the development environment (APP_ENV, CORS_ORIGIN, DATA_DIR, keys) where unset.

    Returns the data folder and the names of the keys taken from it (none when the caller set
    either key itself).
    """
    os.environ["APP_ENV"] = "development"
    os.environ.setdefault("CORS_ORIGIN", "*")
    data_dir = Path(os.environ.setdefault("DATA_DIR", "data")).resolve()
    generated = []
    if not os.environ.get("WIDGET_API_KEY") and not os.environ.get("ADMIN_API_KEY"):
        for name, value in load_or_create_keys(data_dir).items():
            os.environ[name] = value
            generated.append(name)
    return data_dir, generated


def main() -> None:
    if sys.argv[1:2] == ["ops"]:
        use_development_defaults()
        import cli  # after the environment is set: the CLI builds the app from it

        cli.ocw(args=sys.argv[2:], prog_name="scripts/ops.sh")
        return
    data_dir, generated = use_development_defaults()
    try:
        load_settings()  # refuse a bad setting before the banner invites anyone to use the service
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    port = os.environ.setdefault("PORT", "8000")
    base_url = f"http://localhost:{port}"
    print(f"\nOpen Chat Widget (development) at {base_url}")
    print(f"  Demo page (the widget, an embed snippet, a fetch example): {base_url}/")
    # Printing is the point here: these are throwaway development keys kept in the data folder.
    for name in generated:
        print(f"  {name}={os.environ[name]}   (kept in {data_dir}/dev-keys.json)")
    if not os.environ.get("OPENAI_API_KEY"):
        print("  No OPENAI_API_KEY: replies come from the offline demo responder.")
    print("  Ops command line against this service: scripts/ops.sh --help")
    widget_key = os.environ["WIDGET_API_KEY"].split(",")[0].strip()
    body = json.dumps({"sessionId": "demo", "message": "Hello"})
    print(
        f"  Try: curl -N -H {shlex.quote('X-Widget-Api-Key: ' + widget_key)} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)} {base_url}/v1/chat/stream\n",
        flush=True,
    )
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "wsgi:app", *sys.argv[1:]])


if __name__ == "__main__":
    main()
