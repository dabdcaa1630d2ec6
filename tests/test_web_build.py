"""The served scripts are what web/src builds, and the widget stays small (issue: ~30 kB gzipped)."""

from __future__ import annotations

import gzip
import re
import subprocess

from tests.support import ROOT

WIDGET = ROOT / "static" / "chat-widget.js"


def test_the_committed_scripts_are_what_their_sources_build():
    """static/chat-widget.js and static/dashboard/dashboard.js are built files: an edit of
    web/src that was not rebuilt (or an edit of a built file) fails here."""
    result = subprocess.run(
        ["node", "build.mjs", "--check"], cwd=ROOT / "web", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_readme_states_the_widgets_gzipped_size_and_it_stays_under_30_kb():
    size_kb = len(gzip.compress(WIDGET.read_bytes(), compresslevel=9, mtime=0)) / 1000  # as the service sends it
    stated = re.search(r"([\d.]+) kB gzipped", (ROOT / "README.md").read_text())
    assert stated, "README.md does not state the widget's gzipped size"
    assert abs(float(stated.group(1)) - size_kb) < 1, (
        f"README says {stated.group(1)} kB, the widget is {size_kb:.1f} kB"
    )
    assert size_kb <= 30
