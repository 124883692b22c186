"""Write fixture copies of the paper grid's datasets, each in its published layout, for `make paper-tiny`.

    python scripts/paper_fixtures.py [OUT]     # default: $MEDFT_CACHE_DIR/fixtures (~/.cache/medft/fixtures)

vqa_rad is the demo generator's output (VQA-RAD's split layout); slake, path_vqa (original pickles)
and mimic_cxr (R2Gen annotation.json) come from medft.testing.fixtures. Nothing here is real data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from medft.data.demo import ensure_demo
from medft.testing.fixtures import make_mimic_cxr, make_path_vqa_pickles, make_slake


def main() -> None:
    cache = Path(os.environ.get("MEDFT_CACHE_DIR", Path.home() / ".cache" / "medft"))
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else cache / "fixtures"
    out.mkdir(parents=True, exist_ok=True)
    ensure_demo(out / "vqa_rad", n_train_images=40, n_test_images=10)
    for name, make in [("slake", lambda p: make_slake(p, sizes=(24, 8, 8))),
                       ("path_vqa", lambda p: make_path_vqa_pickles(p, sizes=(24, 8, 8))),
                       ("mimic_cxr", lambda p: make_mimic_cxr(p, sizes=(24, 8, 8)))]:
        if not (out / name).exists():
            make(out / name)
    print(f"fixtures in {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_dir())))


if __name__ == "__main__":
    main()
