"""The watch filter's rules, one row each (as paperless-ngx tests its consumer filter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smolvlm_watch.config import OutputConfig, WatchConfig
from smolvlm_watch.watcher import MediaFilter

ROOT = Path("/photos")
WATCH = WatchConfig(path=ROOT, exclude=("private", "*.tmp.jpg", "raw/*"), output=OutputConfig())


@pytest.mark.parametrize("rel, reason", [
    ("a.jpg", None),
    ("A.JPEG", None),
    ("sub/deep/b.png", None),
    ("clip.MOV", None),
    ("scan.pdf", None),
    (".hidden.jpg", "hidden file"),
    ("a.jpg.smolvlm.json", "a smolvlm-watch sidecar or temp file"),
    (".smolvlm-tmp-123-abc", "hidden file"),
    ("Thumbs.db", "ignored by default (Thumbs.db)"),
    ("._a.jpg", "hidden file"),
    ("download.jpg.part", "ignored by default (*.part)"),
    ("a.jpg.xmp", "ignored by default (*.xmp)"),
    ("notes.txt", "extension '.txt' is not a media extension"),
    ("a.jpg.txt", "a smolvlm-watch sidecar or temp file"),  # issue 27, 9: our OCR text is no skipped input
    ("a.jpg.notes.txt", "extension '.txt' is not a media extension"),
    ("README", "extension '(none)' is not a media extension"),
    ("@eaDir/a.jpg", "inside an ignored or excluded folder (/photos/@eaDir)"),
    (".stversions/a.jpg", "inside an ignored or excluded folder (/photos/.stversions)"),
    ("private/a.jpg", "inside an ignored or excluded folder (/photos/private)"),
    ("x.tmp.jpg", "matches an exclude glob ['private', '*.tmp.jpg', 'raw/*']"),
    ("raw/a.jpg", "inside an ignored or excluded folder (/photos/raw)"),  # raw/* excludes the folder's files
    ("rawish/a.jpg", None),
])
def test_filter_rules(rel, reason):
    assert MediaFilter(WATCH).reason(ROOT / rel) == reason


def test_outside_non_recursive_and_include_rules():
    assert MediaFilter(WATCH).reason(Path("/elsewhere/a.jpg")) == "outside the watched folder /photos"
    flat = WatchConfig(path=ROOT, recursive=False)
    assert MediaFilter(flat).reason(ROOT / "sub" / "a.jpg") == "in a subfolder of a non-recursive watch"
    only = WatchConfig(path=ROOT, include=("2026/*",))
    assert MediaFilter(only).reason(ROOT / "2026" / "a.jpg") is None
    assert MediaFilter(only).reason(ROOT / "2025" / "a.jpg") == "matches none of the include globs ['2026/*']"
    mirrored = WatchConfig(path=ROOT, output=OutputConfig(output_dir=ROOT / "sidecars"))
    assert not MediaFilter(mirrored).accepts_dir(ROOT / "sidecars")


def test_symlinks_are_followed_only_inside_the_watch(tmp_path):
    root = tmp_path / "watch"
    root.mkdir()
    (root / "real.jpg").write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (root / "in.jpg").symlink_to(root / "real.jpg")
    (root / "out.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "broken.jpg").symlink_to(root / "nothing.jpg")
    (root / "loop1.jpg").symlink_to(root / "loop2.jpg")
    (root / "loop2.jpg").symlink_to(root / "loop1.jpg")
    f = MediaFilter(WatchConfig(path=root))
    assert f.reason(root / "in.jpg") is None
    assert f.reason(root / "out.jpg") == (f"a symlink to a file outside the watch ({tmp_path / 'outside.jpg'}; "
                                          "not followed)")
    assert f.reason(root / "broken.jpg") == "a broken symlink"
    assert f.reason(root / "loop1.jpg") == "a symlink loop"
