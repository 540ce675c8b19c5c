"""A SemanticKITTI benchmark submission: ``SemanticKittiSubmission`` (the flagship's prediction writer for
``lazytrain predict``) writes ``sequences/<SS>/predictions/<NNNNNN>.label`` for every scan, and
``validate_submission`` performs the checks of the official ``validate_submission.py`` (semantic-kitti-api) on
a folder or a zip, plus the ids. ``python -m lazytrain.lidar.predictions SUBMISSION DATASET_ROOT`` runs it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch

from ..errors import DataError
from ..fileio import atomic_write
from ..images import write_png
from .evaluator import _knn_settings, pixel_classes, point_classes
from .pictures import scan_picture
from .semantic_kitti import LEARNING_MAP, OFFICIAL_SPLIT, to_raw_ids

__all__ = ["SemanticKittiSubmission", "validate_submission"]

logger = logging.getLogger(__name__)


class SemanticKittiSubmission:
    """Writes the point-wise predictions of each scan as the benchmark wants them: ``<out>/sequences/<SS>/
    predictions/<NNNNNN>.label``, one little-endian uint32 per point of the original scan, in the scan's
    order: the raw SemanticKITTI id of the predicted class (``learning_map_inv``), instance bits 0.

    Every point gets a label, also the points whose pixel shows a closer point: with ``knn`` RangeNet++'s KNN
    post-processing (settings as ``SemanticKittiEvaluator``'s ``knn``), else their pixel's prediction. By
    default class 0 (unlabeled) is never predicted: the benchmark counts it as a miss of the point's class. Reads
    ``outputs``
    (B, C, H, W logits) and the batch's ``sequence``, ``frame``, ``proj_v``, ``proj_u`` (and for KNN or
    pictures ``range_image``, ``point_range``, ``mask``), as ``SemanticKittiDataset(return_points=True)``
    gives them. With ``pictures`` (``lazytrain predict --png``), ``<out>/pictures/<SS>_<NNNNNN>.png`` shows
    each scan as the evaluator's pictures do (range, ground truth, prediction and error where the scan has
    labels; else range and prediction).

    ``predict_unlabeled=True`` writes what the authors' inference scripts write (lidar-bonnetal's infer.py,
    SalsaNext's, CENet's): the plain argmax over every class, so a pixel whose best class is 0 is written as 0
    (unlabeled), and with ``knn`` their KNN votes from those pixel classes (a vote for 0 is dropped, as theirs).
    Use it to compare with their predictions label for label; the benchmark counts a 0 as a miss.
    ``dataset_root`` (the configs pass ``${dataset.root}``) fills in the command the summary gives to check the
    submission.
    """

    def __init__(
        self,
        num_classes: int = 20,
        knn: Optional[Mapping[str, Any]] = None,
        predict_unlabeled: bool = False,
        dataset_root: Optional[str] = None,
    ) -> None:
        self.num_classes = num_classes
        self.dataset_root = dataset_root  # for the check command of the summary
        self.predict_unlabeled = predict_unlabeled
        self.knn = _knn_settings(knn)
        self.out_dir = ""
        self.pictures = False
        self.counts: dict[str, list[int]] = {}  # sequence -> [scans, points]

    def begin(self, out_dir: str, *, pictures: bool = False) -> None:
        self.out_dir, self.pictures, self.counts = out_dir, pictures, {}
        os.makedirs(os.path.join(out_dir, "sequences"), exist_ok=True)

    def write(self, batch: Mapping[str, Any], outputs: torch.Tensor) -> None:
        # never class 0, as the evaluator scores them, unless asked for the authors' plain argmax
        pred_images = outputs.argmax(dim=1) if self.predict_unlabeled else pixel_classes(outputs)
        for i in range(pred_images.shape[0]):
            sequence, frame = str(batch["sequence"][i]), str(batch["frame"][i])
            pred = point_classes(batch, i, pred_images[i], self.num_classes, self.knn)
            folder = os.path.join(self.out_dir, "sequences", sequence, "predictions")
            os.makedirs(folder, exist_ok=True)
            raw_ids = to_raw_ids(pred.cpu().numpy()).astype("<u4")
            atomic_write(os.path.join(folder, f"{frame}.label"), raw_ids.tobytes(), durable=False)
            scans_points = self.counts.setdefault(sequence, [0, 0])
            scans_points[0] += 1
            scans_points[1] += len(pred)
            if self.pictures:
                labels = batch["label_image"][i] if bool(batch["point_labels"][i].any()) else None
                picture = scan_picture(batch["range_image"][i], pred_images[i], labels, batch["mask"][i])
                write_png(os.path.join(self.out_dir, "pictures", f"{sequence}_{frame}.png"), picture)

    def end(self) -> dict[str, Any]:
        folder = os.path.abspath(self.out_dir)
        scans = sum(c[0] for c in self.counts.values())
        points = sum(c[1] for c in self.counts.values())
        root = os.path.abspath(self.dataset_root) if self.dataset_root else "DATASET_ROOT"
        for sequence, (n, p) in sorted(self.counts.items()):
            logger.info("sequence %s: %d scans, %d points", sequence, n, p)
        summary: dict[str, Any] = {
            "scans": scans,
            "points": points,
            "sequences": " ".join(sorted(self.counts)),
            "folder": folder,
            "zip": f"cd {folder} && zip -r {folder}.zip sequences",
            "check": f"python -m lazytrain.lidar.predictions {folder}.zip {root}",
        }
        if self.pictures:
            summary["pictures"] = os.path.join(folder, "pictures")
        return summary


def _sequences_folder(dataset_root: str) -> str:
    """``<root>/dataset/sequences`` (lazytrain's dataset.root) or ``<root>/sequences`` (the official tools')."""
    for candidate in (os.path.join(dataset_root, "dataset", "sequences"), os.path.join(dataset_root, "sequences")):
        if os.path.isdir(candidate):
            return candidate
    raise DataError(f"no sequences/ folder under '{os.path.abspath(dataset_root)}' (nor dataset/sequences/).")


def _submission_entries(submission: str) -> tuple[set[str], dict[str, int], Any]:
    """The directories, the files with their sizes, and a reader ``name -> bytes`` of a folder or a zip."""
    if os.path.isfile(submission):
        if not submission.endswith(".zip"):
            raise DataError(f"submission '{submission}' is a file but not a .zip (the benchmark takes a zip).")
        archive = zipfile.ZipFile(submission)
        infos = archive.infolist()
        dirs = {i.filename for i in infos if i.filename.endswith("/")}
        files = {i.filename: i.file_size for i in infos if not i.filename.endswith("/")}
        return dirs, files, archive.read
    if not os.path.isdir(submission):
        raise DataError(f"submission '{submission}' does not exist.")
    dirs, files = set(), {}
    for parent, dirnames, filenames in os.walk(submission):
        rel = os.path.relpath(parent, submission).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        dirs.update(prefix + d + "/" for d in dirnames)
        files.update({prefix + f: os.path.getsize(os.path.join(parent, f)) for f in filenames})

    def read(name: str) -> bytes:
        with open(os.path.join(submission, name), "rb") as f:
            return f.read()

    return dirs, files, read


def validate_submission(
    submission: str, dataset_root: str, split: str = "test", sequences: Optional[Sequence[str]] = None
) -> dict[str, Any]:
    """Check a submission folder or zip for the scans of ``split`` (or ``sequences``) under ``dataset_root``
    as the official ``validate_submission.py`` does: a ``sequences/`` directory with ``<SS>/predictions/`` for
    each sequence, a ``.label`` for every ``.bin`` of the data set, 4 bytes per point. The official tool
    leaves the ids to the evaluation; this also checks that each one (lower 16 bits) is a raw id of the label
    config and its upper 16 bits are 0. The first problem is a DataError naming the file; else a summary:
    ``scans``, ``points`` and ``unlabeled`` (points predicted as raw id 0: misses in the benchmark)."""
    seqs = [f"{int(s):02d}" for s in (sequences if sequences is not None else OFFICIAL_SPLIT[split])]
    base = _sequences_folder(dataset_root)
    dirs, files, read = _submission_entries(submission)
    known = np.zeros(1 << 16, dtype=bool)
    known[list(LEARNING_MAP)] = True
    if "sequences/" not in dirs:
        raise DataError(f"'{submission}': the directory 'sequences/' is missing.")
    scans = points = unlabeled = 0
    for seq in seqs:
        for needed in (f"sequences/{seq}/", f"sequences/{seq}/predictions/"):
            if needed not in dirs:
                raise DataError(f"'{submission}': the directory '{needed}' is missing.")
        velodyne = os.path.join(base, seq, "velodyne")
        if not os.path.isdir(velodyne):
            raise DataError(f"the data set has no folder '{velodyne}' to check sequence {seq} against.")
        for name in sorted(os.listdir(velodyne)):
            if not name.endswith(".bin"):
                continue
            num_points = os.path.getsize(os.path.join(velodyne, name)) // 16
            label = f"sequences/{seq}/predictions/{os.path.splitext(name)[0]}.label"
            if label not in files:
                raise DataError(f"'{submission}': '{label}' is missing (scan '{os.path.join(velodyne, name)}').")
            if files[label] != 4 * num_points:
                raise DataError(
                    f"'{submission}': '{label}' should have {num_points} labels, but has {files[label] / 4:g} "
                    f"({files[label]} bytes)."
                )
            raw = np.frombuffer(read(label), dtype="<u4")
            semantic = raw & 0xFFFF
            bad = ~known[semantic] | (raw >> 16 != 0)
            if bad.any():
                first = int(raw[np.argmax(bad)])
                raise DataError(
                    f"'{submission}': '{label}' holds {int(bad.sum())} labels that are no raw SemanticKITTI "
                    f"id (the first: {first}); write learning_map_inv of the training ids."
                )
            scans += 1
            points += num_points
            unlabeled += int((semantic == 0).sum())
    return {"scans": scans, "points": points, "unlabeled": unlabeled, "sequences": " ".join(seqs)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lazytrain.lidar.predictions",
        description="Check a SemanticKITTI submission (folder or zip) as the official validate_submission.py "
        "does, and its ids.",
    )
    parser.add_argument("submission", help="the zip (or folder) that holds sequences/<SS>/predictions/")
    parser.add_argument("dataset_root", help="the data set: the folder that holds dataset/sequences/ (or sequences/)")
    parser.add_argument("--split", default="test", choices=sorted(OFFICIAL_SPLIT))
    args = parser.parse_args(argv)
    try:
        summary = validate_submission(args.submission, args.dataset_root, args.split)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.submission}: valid, {summary['scans']} scans of sequences {summary['sequences']}, "
        f"{summary['points']} points ({summary['unlabeled']} predicted unlabeled)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
