"""`get_dmatrix` and `get_content_type` as the XGBoost image's scripts and algorithm mode call them (file mode).

What the image does, and so this does:
- the content type is named by its short name (csv, libsvm, parquet; any case); `get_content_type` turns a
  channel's ContentType (text/csv, text/libsvm, text/x-libsvm, application/x-parquet, or none: libsvm) into one;
- a path is a file or a directory, whose regular files are all read, down to three levels of sub-directories;
- csv: no header, the label in column 0, with `csv_weights=1` the instance weight in column 1, the delimiter
  sniffed from the first line of the first file; libsvm: `label[:weight] index:value ...`, indices as written;
  parquet: the label in column 0;
- a matrix without labels is a UserError; so is data that cannot be read.
Not here: recordio-protobuf and Pipe mode, which the image reads with mlio (not on any package index).
"""

import csv
import os

MAX_DEPTH = 3  # the image links files down to this many levels of sub-directories


class UserError(Exception):
    """A mistake in the request or the data (the image's sagemaker_algorithm_toolkit.exceptions.UserError)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


_CONTENT_TYPES = {"csv": "csv", "text/csv": "csv", "libsvm": "libsvm", "text/libsvm": "libsvm",
                  "text/x-libsvm": "libsvm", "parquet": "parquet", "application/x-parquet": "parquet",
                  "recordio-protobuf": "recordio-protobuf", "application/x-recordio-protobuf": "recordio-protobuf"}


def get_content_type(content_type_cfg_val):
    """The short name of a channel's ContentType; libsvm when there is none, as the image defaults."""
    if content_type_cfg_val is None:
        return "libsvm"
    media, _, parameters = content_type_cfg_val.partition(";")
    name = _CONTENT_TYPES.get(media.strip().lower())
    label_size = [p.strip() for p in parameters.split(";") if p.strip().startswith("label_size")]
    if name is None:
        raise UserError("ContentType {} is not supported. Use one of: csv, libsvm, parquet".format(
            content_type_cfg_val))
    if label_size and name == "csv" and label_size[0].replace(" ", "") != "label_size=1":
        raise UserError("{} is not an accepted csv ContentType. Optional parameter label_size must be equal to "
                        "1".format(content_type_cfg_val))
    return name


def data_files(data_path):
    """The regular files a path names, sorted: the path itself, or the files under it to MAX_DEPTH levels."""
    paths = data_path if isinstance(data_path, (list, tuple)) else [data_path]
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
            continue
        base_depth = path.rstrip(os.sep).count(os.sep)
        for root, dirs, files in os.walk(path):
            depth = root.rstrip(os.sep).count(os.sep) - base_depth
            if depth >= MAX_DEPTH:
                dirs[:] = []
            dirs.sort()
            found += [os.path.join(root, name) for name in sorted(files)
                      if os.path.isfile(os.path.join(root, name))]
    return found


def get_dmatrix(data_path, content_type, csv_weights=0, is_pipe=False):
    """An xgboost.DMatrix of the data at `data_path` (a file, a directory or a list of them)."""
    if is_pipe:
        raise UserError("Pipe mode is read with mlio in the image, which is not available on this machine; use "
                        "File mode")
    kind = (content_type or "").lower()
    if kind == "recordio-protobuf":
        raise UserError("recordio-protobuf is read with mlio in the image, which is not available on this machine; "
                        "use csv, libsvm or parquet")
    if data_path is None or not all(os.path.exists(p) for p in (
            data_path if isinstance(data_path, (list, tuple)) else [data_path])):
        raise UserError("Data path {} does not exist".format(data_path))
    files = data_files(data_path)
    if kind == "csv":
        matrix = get_csv_dmatrix(files, csv_weights)
    elif kind == "libsvm":
        matrix = get_libsvm_dmatrix(files)
    elif kind == "parquet":
        matrix = get_parquet_dmatrix(files)
    else:
        raise UserError("Content type {} is not supported. Use one of: csv, libsvm, parquet".format(content_type))
    if matrix.get_label().size == 0:
        raise UserError("Got input data without labels. Please check the input data set. If training job is "
                        "running on multiple instances, please switch to using single instance if number of "
                        "records in the data set is less than number of workers (16 * number of instances) in "
                        "the cluster.")
    return matrix


def _sniff_delimiter(path):
    with open(path, newline="") as handle:
        first = handle.readline()
    try:
        return csv.Sniffer().sniff(first, delimiters=",;\t| ").delimiter
    except csv.Error:
        raise UserError("Could not determine delimiter on line {}".format(first[:50].strip()))


def get_csv_dmatrix(files, csv_weights=0):
    import numpy as np
    import xgboost as xgb

    if not files:
        raise UserError("No csv data files to read")
    delimiter = _sniff_delimiter(files[0])
    try:
        parts = [np.loadtxt(f, delimiter=delimiter, dtype=np.float64, ndmin=2) for f in files
                 if os.path.getsize(f) > 0]
        rows = np.concatenate(parts) if parts else np.empty((0, 0))
    except ValueError as exc:
        raise UserError("Failed to load csv data with exception:\n{}".format(exc))
    first_feature = 2 if csv_weights == 1 else 1
    if rows.shape[0] and rows.shape[1] <= first_feature:
        raise UserError("csv data has no feature columns (label first, no header)")
    weights = rows[:, 1] if csv_weights == 1 else None
    return xgb.DMatrix(rows[:, first_feature:], label=rows[:, 0], weight=weights)


def read_libsvm(files):
    """(labels, weights or None, scipy CSR matrix) of libsvm text; indices kept as written, as xgboost reads them."""
    import numpy as np
    from scipy.sparse import csr_matrix

    labels, weights, indptr, indices, values = [], [], [0], [], []
    for path in files:
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split("#", 1)[0].split()
                if not fields:
                    continue
                try:
                    label, _, weight = fields[0].partition(":")
                    labels.append(float(label))
                    weights.append(float(weight) if weight else None)
                    for item in fields[1:]:
                        index, value = item.split(":", 1)
                        if index == "qid":
                            continue
                        indices.append(int(index))
                        values.append(float(value))
                except ValueError:
                    raise UserError("Failed to load libsvm data with exception:\nline {} of {}: {!r}".format(
                        number, os.path.basename(path), line[:80]))
                indptr.append(len(indices))
    width = max(indices) + 1 if indices else 0
    matrix = csr_matrix((np.array(values, dtype=np.float32), np.array(indices, dtype=np.int64),
                         np.array(indptr, dtype=np.int64)), shape=(len(labels), width))
    weight = np.array(weights, dtype=np.float32) if weights and all(w is not None for w in weights) else None
    return np.array(labels, dtype=np.float32), weight, matrix


def get_libsvm_dmatrix(files):
    import xgboost as xgb

    labels, weights, matrix = read_libsvm(files)
    return xgb.DMatrix(matrix, label=labels, weight=weights)


def get_parquet_dmatrix(files):
    import numpy as np
    import xgboost as xgb

    try:
        import pyarrow.parquet as pq

        tables = [pq.read_table(f).to_pandas() for f in files]
        data = np.concatenate([t.to_numpy(dtype=np.float64) for t in tables]) if tables else np.empty((0, 1))
    except Exception as exc:  # pyarrow's own errors: the image wraps every one the same way
        raise UserError("Failed to load parquet data with exception:\n{}".format(exc))
    return xgb.DMatrix(data[:, 1:], label=data[:, 0])
