"""Labelled fundus datasets: the in-memory array set and loaders for public layouts on disk."""

from models.datasets.arrays import INDEX_FILE, UNKNOWN_GRADE, FundusArrays, ImageArray
from models.datasets.dicom import load_dicom, read_dicom_image
from models.datasets.labelled import (
    CsvColumns,
    check_task_fits,
    class_folders,
    label_index,
    load_class_folders,
    load_csv,
)
from models.datasets.prepare import materialise, read_image, split_by_patient
from models.datasets.public import (
    LAYOUTS,
    BadImageError,
    DatasetLayoutError,
    FundusRecord,
    LoadedIndex,
    detect_layout,
    load_aptos,
    load_eyepacs,
    load_folders,
    load_idrid,
    load_index,
    load_messidor2,
)
from models.datasets.shards import ShardedImages, write_shard

__all__ = [
    "INDEX_FILE",
    "LAYOUTS",
    "UNKNOWN_GRADE",
    "BadImageError",
    "CsvColumns",
    "DatasetLayoutError",
    "FundusArrays",
    "FundusRecord",
    "ImageArray",
    "LoadedIndex",
    "ShardedImages",
    "check_task_fits",
    "class_folders",
    "detect_layout",
    "label_index",
    "load_aptos",
    "load_class_folders",
    "load_csv",
    "load_dicom",
    "load_eyepacs",
    "load_folders",
    "load_idrid",
    "load_index",
    "load_messidor2",
    "materialise",
    "read_dicom_image",
    "read_image",
    "split_by_patient",
    "write_shard",
]
