"""Clip-feature datasets for training and evaluation.

:func:`load_dataset` detects the on-disk layout (:mod:`fusewatch.engines.data.load`) and returns a
:class:`FeatureDataset` of :class:`VideoFeatures` (:mod:`fusewatch.engines.data.records`); the parts:
:mod:`~fusewatch.engines.data.names` (name heuristics), :mod:`~fusewatch.engines.data.arrays` (one
feature file), :mod:`~fusewatch.engines.data.align` (alignment of representations),
:mod:`~fusewatch.engines.data.ground_truth` and :mod:`~fusewatch.engines.data.formats` (one module
per layout).
"""

from __future__ import annotations

from fusewatch.engines.data.align import align_clip_counts
from fusewatch.engines.data.arrays import load_feature_array
from fusewatch.engines.data.formats.fusewatch_dir import load_fusewatch_dir
from fusewatch.engines.data.formats.npy_lists import load_lists, load_npy_dir, read_list_file
from fusewatch.engines.data.formats.ucf_c3d import load_ucf_c3d
from fusewatch.engines.data.ground_truth import read_labels_json, read_ucf_annotations, ucf_segment_ranges
from fusewatch.engines.data.load import as_dataset, load_dataset
from fusewatch.engines.data.names import label_from_name, rep_name_from_file, video_name
from fusewatch.engines.data.records import ClipRule, FeatureDataset, VideoFeatures

__all__ = [
    "ClipRule",
    "FeatureDataset",
    "VideoFeatures",
    "as_dataset",
    "load_dataset",
    "align_clip_counts",
    "load_feature_array",
    "load_fusewatch_dir",
    "load_lists",
    "load_npy_dir",
    "read_list_file",
    "load_ucf_c3d",
    "read_labels_json",
    "read_ucf_annotations",
    "ucf_segment_ranges",
    "label_from_name",
    "rep_name_from_file",
    "video_name",
]
