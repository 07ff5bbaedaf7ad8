"""The Open Inference Protocol (KServe V2, Triton, MLServer) over REST: a request's tensors read
onto a signature's columns, predictions written as output tensors; JSON and Triton's binary
tensor data extension.

Inputs follow MLServer's `pd` content type: one tensor per signature column, named as the
column, of shape [n] or [n, 1], datatype FP64, FP32, INT64, INT32, BOOL or BYTES (UTF-8 text).
Values are then read and validated as MLflow's scoring protocol reads the same column
(`serving.inputs`): the signature's type decides, the datatype says how binary bytes are laid
out. Outputs are the answer's columns, one tensor each; `outputs` in the request picks some.

Binary data (Triton's extension, `tritonclient`'s default): with the header
`Inference-Header-Content-Length: L`, the body's first L bytes are the JSON request and the rest
the raw tensors, in input order, each `parameters.binary_data_size` bytes (little-endian
numbers; BOOL one byte; BYTES each element as a 4-byte little-endian length and its bytes).
Outputs are binary when `parameters.binary_data` of a requested output (or the request's
`binary_data_output`) says so; the answer is then `application/octet-stream` with the same
header. Every size and shape is checked against the body and the decode limits before an
array is built.
"""

import math
import struct
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from registry.refs import ModelRef
from serving import inputs, protocol
from serving.errors import BadRequest, ServingError, UnsupportedMediaType
from serving.inputs import Batch, InputSpec
from serving.limits import DEFAULT_LIMITS, DecodeLimits, extent, holds_text, shown

JSON, BINARY = "application/json", "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data",)
INPUT_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP64": np.dtype("<f8"),
    "FP32": np.dtype("<f4"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "BOOL": np.dtype("u1"),  # read as bytes, each 0 or 1
    "BYTES": np.dtype(object),
}
"""Datatypes a request's tensors may have, and the layout of their binary data."""
SIGNATURE_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
"""The datatype of each MLflow column type, as metadata shows it."""
DEFAULT_OUTPUT = "predictions"
"""The output tensor's name when the model answers an array rather than named columns."""
_LENGTH = struct.Struct("<I")
_DATATYPE_NAMES = frozenset(INPUT_DATATYPES)
_FIRST = itemgetter(0)
_SCALARS = frozenset((int, float, bool, type(None)))
"""JSON values that are neither text nor a container."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor of metadata: name, datatype and shape (-1 where any size goes)."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(eq=False)
class V2Codec:
    """The protocol's two ends for one request (`protocol.Codec`): `decode` keeps what the
    request asked of its answer (id, outputs, binary or not) for `encode`."""

    limits: DecodeLimits = DEFAULT_LIMITS
    header_length: str | None = None
    """The request's Inference-Header-Content-Length header, if it had one."""
    content_encoding: str | None = None
    """The request's Content-Encoding header: only identity is read."""
    request_id: str | None = None
    requested: dict[str, bool | None] | None = None
    """Output names the request asked for -> binary or not (None: as `binary_output`)."""
    binary_output: bool = False

    def decode(
        self, body: bytes, content_type: str | None, spec: InputSpec | None, schema: Schema | None
    ) -> protocol.Decoded:
        """The request's inputs as a validated batch (or a DataFrame when `spec` is None);
        415, 413 or 400 naming the input at fault."""
        _check_media_type(content_type)
        if self.content_encoding not in (None, "", "identity"):
            raise UnsupportedMediaType(
                f"Content-Encoding '{shown(self.content_encoding)}' is not supported: send the "
                "body uncompressed"
            )
        header, binary = _split(body, self.header_length)
        document = _parse(header)
        self._read_answer_options(document)
        tensors = document.get("inputs")
        if not isinstance(tensors, list) or not set(map(type, tensors)) <= {dict}:
            raise BadRequest("'inputs' must be a list of tensors, each a JSON object")
        long_strings = len(header) > self.limits.string_chars
        columns = None if binary else _plain_columns(tensors, self.limits, long_strings)
        if columns is None:
            declared = [_declared(t) for t in tensors]
            _check_counts(declared, self.limits)
            columns = _values(declared, binary, self.limits, long_strings=long_strings)
        if spec is not None:
            return protocol.Decoded(batch=_batch(spec, columns))
        return protocol.Decoded(data=_frame(columns, [_declared(t) for t in tensors]))

    def encode(self, predictions: Any, ref: ModelRef) -> protocol.Encoded:
        """The output tensors the request asked for (all by default), JSON or binary, from
        version `ref`; none for a request of zero rows (no model was asked)."""
        tensors = _output_arrays(predictions)
        if self.requested is not None and tensors:  # none for a request of zero rows
            known = dict(tensors)
            unknown = [n for n in self.requested if n not in known]
            if unknown:
                raise BadRequest(
                    f"unknown output '{shown(unknown[0])}': this model answers "
                    + ", ".join(f"'{n}'" for n in known)
                )
            tensors = [(n, known[n]) for n in self.requested]
        outputs, chunks = [], []
        for name, array in tensors:
            binary = self.requested.get(name) if self.requested is not None else None
            output, chunk = _output(name, array, self.binary_output if binary is None else binary)
            outputs.append(output)
            if chunk is not None:
                chunks.append(chunk)
        document: dict[str, Any] = {"model_name": ref.name, "model_version": ref.version}
        if self.request_id is not None:
            document["id"] = self.request_id
        document["outputs"] = outputs
        header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
        if not chunks:
            return protocol.Encoded(header)
        return protocol.Encoded(
            b"".join([header, *chunks]), BINARY, ((HEADER_LENGTH, str(len(header))),)
        )

    def _read_answer_options(self, document: dict[str, Any]) -> None:
        """Keep the request's id, its requested outputs and their binary_data flags."""
        request_id = document.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise BadRequest("'id' must be a string")
        self.request_id = request_id
        parameters = _parameters(document, "the request")
        self.binary_output = _flag(parameters, "binary_data_output", "the request")
        requested = document.get("outputs")
        if requested is None:
            return
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise BadRequest("'outputs' must be a list of objects, each naming an output")
        self.requested = {}
        for output in requested:
            name = output.get("name")
            if not isinstance(name, str):
                raise BadRequest("each requested output needs a 'name' (a string)")
            where = f"output '{shown(name)}'"
            options = _parameters(output, where)
            if options.get("classification"):
                raise BadRequest(f"{where}: classification outputs are not supported")
            binary = options.get("binary_data")
            self.requested[name] = None if binary is None else _flag(options, "binary_data", where)


def error_body(error: ServingError) -> bytes:
    """The protocol's error document: `{"error": message}`."""
    return orjson.dumps({"error": str(error)})


def input_tensors(schema: Schema | None) -> list[Tensor]:
    """A signature's inputs as the protocol's tensor metadata."""
    return _tensors(schema)


def output_tensors(
    schema: Schema | None, answer: tuple[tuple[str, str], ...] | None
) -> list[Tensor]:
    """The outputs' metadata: from the output signature, else from the columns (and dtypes)
    the version answered its warm-up with."""
    if schema is not None:
        return _tensors(schema)
    return [Tensor(name, _datatype_named(kind), [-1]) for name, kind in answer or ()]


def _datatype_named(dtype: str) -> str:
    try:
        return _datatype(np.dtype(dtype))
    except TypeError:  # a pandas type (string, category, a nullable integer)
        return "BYTES"


# -- reading a request ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Declared:
    """One input tensor as the request declares it, its data not read yet."""

    name: str
    datatype: str
    rows: int
    count: int
    data: Any
    binary_size: int | None


def _check_media_type(content_type: str | None) -> None:
    if not content_type:
        return  # tritonclient sends none
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(f"unsupported content type parameter '{shown(parameter)}'")
    if mime.lower() not in (JSON, BINARY):
        raise UnsupportedMediaType(
            f"unsupported content type '{shown(mime)}': use {JSON} (or {BINARY} with the "
            f"{HEADER_LENGTH} header)"
        )


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary data after it."""
    if header_length is None:
        return body, memoryview(b"")
    length = header_length.strip()
    if not length.isdigit() or not 0 < int(length) <= len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes, from 1 to the body's "
            f"{len(body)}"
        )
    view = memoryview(body)
    return bytes(view[: int(length)]), view[int(length) :]


def _parse(header: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.args[0].split(':')[0]}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object with 'inputs'")
    return document


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be a JSON object")
    return parameters


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameter '{key}' must be true or false")
    return value


_NAME, _DATATYPE, _SHAPE, _DATA = map(itemgetter, ("name", "datatype", "shape", "data"))


def _plain_columns(
    tensors: list[dict[str, Any]], limits: DecodeLimits, long_strings: bool
) -> dict[str, list[Any]] | None:
    """The common request read in a few passes, each in C: every input a flat JSON list of
    the same n values, shape [n], a known datatype, no parameters, names distinct. None for
    any other request, which `_declared` and `_values` then read (and refuse) input by input.
    """
    if not tensors or set(map(len, tensors)) != {4}:  # a key beyond the four: "parameters"
        return None
    try:
        names, datatypes = list(map(_NAME, tensors)), list(map(_DATATYPE, tensors))
        shapes, data = list(map(_SHAPE, tensors)), list(map(_DATA, tensors))
    except KeyError:
        return None
    if (
        set(map(type, names)) != {str}
        or not _DATATYPE_NAMES.issuperset(datatypes)
        or set(map(type, shapes)) != {list}
        or set(map(len, shapes)) != {1}
        or set(map(type, data)) != {list}
        or len(set(names)) != len(names)
    ):
        return None
    lengths = set(map(len, data))
    sizes = {shape[0] for shape in shapes}
    if len(lengths) != 1 or sizes != lengths:
        return None
    rows = lengths.pop()
    if rows and list in set(map(type, map(_FIRST, data))):  # [[v], [v], ...]: flattened there
        return None
    limits.check(rows, len(names), rows * len(names))
    if long_strings and not _SCALARS.issuperset(map(type, chain.from_iterable(data))):
        for name, values in zip(names, data, strict=True):
            if holds_text(values):
                found = extent(values)
                limits.check_text(found.longest, f"{_input(name)} element {list(found.path)}")
    return dict(zip(names, data, strict=True))


def _declared(tensor: dict[str, Any]) -> _Declared:
    """Name, datatype, shape and where the data is, checked; no value read yet."""
    name = tensor.get("name")
    if not isinstance(name, str):
        raise BadRequest("each input needs a 'name' (a string): the signature column it holds")
    datatype = tensor.get("datatype")
    if datatype not in INPUT_DATATYPES:
        raise BadRequest(
            f"{_input(name)}: datatype '{shown(datatype)}' is not supported; use one of "
            + ", ".join(INPUT_DATATYPES)
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise BadRequest(
            f"{_input(name)}: 'shape' must be a list of sizes (whole numbers, 0 or more)"
        )
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(
            f"{_input(name)}: shape {shown(shape)}; a column's tensor has shape [n] or [n, 1]"
        )
    size = None
    if "parameters" in tensor:
        size = _parameters(tensor, _input(name)).get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise BadRequest(f"{_input(name)}: 'binary_data_size' must be a whole number of bytes")
        if "data" in tensor:
            raise BadRequest(f"{_input(name)}: has both 'data' and 'binary_data_size'")
    elif "data" not in tensor:
        raise BadRequest(f"{_input(name)}: has neither 'data' nor 'binary_data_size'")
    return _Declared(name, datatype, shape[0], math.prod(shape), tensor.get("data"), size)


def _input(name: str) -> str:
    """How a message names an input (built only for a message: it costs a pass over the name)."""
    return f"input '{shown(name)}'"


def _check_counts(declared: list[_Declared], limits: DecodeLimits) -> None:
    """413 from the declared shapes before any value is read; 400 when inputs disagree on
    the number of rows or name one column twice."""
    rows = max((d.rows for d in declared), default=0)
    limits.check(rows, len(declared), sum(d.count for d in declared))
    seen: set[str] = set()
    for tensor in declared:
        first = declared[0]
        if tensor.rows != first.rows:
            raise BadRequest(
                f"input '{shown(tensor.name)}' has {tensor.rows} rows; input "
                f"'{shown(first.name)}' has {first.rows}"
            )
        if tensor.name in seen:
            raise BadRequest(f"input '{shown(tensor.name)}' is given twice")
        seen.add(tensor.name)


def _values(
    declared: list[_Declared], binary: memoryview, limits: DecodeLimits, *, long_strings: bool
) -> dict[str, Any]:
    """Each input's values: a flat list from JSON, an array from binary data."""
    columns: dict[str, Any] = {}
    offset = 0
    for tensor in declared:
        if tensor.binary_size is None:
            columns[tensor.name] = _json_values(tensor, limits, long_strings)
            continue
        end = offset + tensor.binary_size
        if end > len(binary):
            raise BadRequest(
                f"input '{shown(tensor.name)}': binary_data_size {tensor.binary_size} goes past "
                f"the end of the body ({len(binary) - offset} bytes left after the JSON header)"
            )
        columns[tensor.name] = _binary_values(tensor, binary[offset:end], limits)
        offset = end
    if offset != len(binary):
        raise BadRequest(
            f"the body holds {len(binary)} bytes after the JSON header; the inputs' "
            f"binary_data_size add up to {offset}"
        )
    return columns


def _json_values(tensor: _Declared, limits: DecodeLimits, long_strings: bool) -> list[Any]:
    """A tensor's `data`, flattened from [[v], [v], ...] when so nested, counted and measured."""
    data = tensor.data
    if not isinstance(data, list):
        raise BadRequest(f"{_input(tensor.name)}: 'data' must be a list of values")
    if data and type(data[0]) is list:
        if not all(type(row) is list for row in data):
            raise BadRequest(f"{_input(tensor.name)}: 'data' mixes lists and values")
        data = list(chain.from_iterable(data))
    if len(data) != tensor.count:
        raise BadRequest(
            f"{_input(tensor.name)}: shape holds {tensor.count} values; 'data' has {len(data)}"
        )
    if long_strings and holds_text(data):
        found = extent(data)
        limits.check_text(found.longest, f"{_input(tensor.name)} element {list(found.path)}")
    return data


def _binary_values(tensor: _Declared, data: memoryview, limits: DecodeLimits) -> np.ndarray:
    """A tensor's binary data as an array, its size checked against shape and datatype."""
    where = _input(tensor.name)
    dtype = INPUT_DATATYPES[tensor.datatype]
    if tensor.datatype == "BYTES":
        return _texts(data, tensor.count, limits, where)
    needed = tensor.count * dtype.itemsize
    if len(data) != needed:
        raise BadRequest(
            f"{where}: shape of {tensor.count} {tensor.datatype} values needs {needed} bytes; "
            f"binary_data_size is {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype)
    if tensor.datatype != "BOOL":
        return array
    if (array > 1).any():
        row = int(np.argmax(array > 1))
        raise BadRequest(f"{where} element {row}: a BOOL byte must be 0 or 1")
    return array.astype(np.bool_)


def _texts(data: memoryview, count: int, limits: DecodeLimits, where: str) -> np.ndarray:
    """BYTES elements (a 4-byte little-endian length, then that many bytes) as strings."""
    texts = np.empty(count, dtype=object)
    offset, size = 0, len(data)
    for element in range(count):
        if offset + 4 > size:
            raise BadRequest(f"{where}: binary data ends before element {element} of {count}")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > size:
            raise BadRequest(
                f"{where} element {element}: length {length} goes past the tensor's data"
            )
        limits.check_text(length // 4, f"{where} element {element}")  # >= its characters
        try:
            text = str(data[offset : offset + length], "utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{where} element {element}: not UTF-8 text") from None
        limits.check_text(len(text), f"{where} element {element}")
        texts[element] = text
        offset += length
    if offset != size:
        raise BadRequest(
            f"{where}: {size - offset} bytes left after its {count} elements (binary_data_size "
            "too large, or a shape too small)"
        )
    return texts


def _batch(spec: InputSpec, columns: dict[str, Any]) -> Batch:
    """The columns validated as MLflow's protocol validates them (`inputs.from_columns`).

    A signature of required doubles gets one float matrix, as a `dataframe_split` body does:
    built in one numpy call when every value converts as the matrix path converts it (nulls as
    NaN, numeric strings, no infinity), else from the validated columns.
    """
    names, all_double = _compiled(spec)
    if all_double and len(columns) == len(names) and columns.keys() == names.keys():
        try:
            by_column = np.array(list(map(columns.__getitem__, names)), dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            by_column = None
        if by_column is not None and by_column.ndim == 2 and not np.isinf(by_column).any():
            return Batch(list(names), by_column.shape[1], matrix=np.ascontiguousarray(by_column.T))
    batch = inputs.from_columns(spec, columns)
    if all_double and batch.names == list(names) and batch.rows:
        return Batch(
            batch.names, batch.rows, matrix=np.column_stack(batch.arrays), extra=batch.extra
        )
    return batch


_COMPILED: dict[int, tuple[InputSpec, dict[str, None], bool]] = {}
"""Per signature (by identity, checked): its column names and whether all are doubles, which
InputSpec computes on every call."""


def _compiled(spec: InputSpec) -> tuple[dict[str, None], bool]:
    found = _COMPILED.get(id(spec))
    if found is None or found[0] is not spec:
        if len(_COMPILED) > 256:  # versions come and go: forget the old ones
            _COMPILED.clear()
        found = _COMPILED[id(spec)] = (spec, dict.fromkeys(spec.names), spec.all_double)
    return found[1], found[2]


def _frame(columns: dict[str, Any], declared: list[_Declared]) -> pd.DataFrame:
    """The inputs as a DataFrame of their datatypes, for a signature read by MLflow itself."""
    arrays = {}
    for tensor in declared:
        values = columns[tensor.name]
        bool_type = np.dtype(np.bool_)
        dtype = bool_type if tensor.datatype == "BOOL" else INPUT_DATATYPES[tensor.datatype]
        try:
            with np.errstate(all="raise"):  # no NaN or overflow cast into an integer silently
                array = np.asarray(values, dtype=dtype)
        except (ValueError, TypeError, OverflowError, FloatingPointError):
            array = None
        if array is None or array.ndim != 1:
            raise BadRequest(
                f"input '{shown(tensor.name)}': its data are not all {tensor.datatype} values"
            )
        arrays[tensor.name] = array
    return pd.DataFrame(arrays, copy=False)


# -- writing an answer ---------------------------------------------------------------------------


def _output_arrays(predictions: Any) -> list[tuple[str, np.ndarray]]:
    """The answer as named arrays: a DataFrame's columns, else one array `predictions`."""
    if isinstance(predictions, list) and not predictions:
        return []  # a request of zero rows: nothing was predicted
    if isinstance(predictions, pd.DataFrame):
        predictions = protocol.Columns.of(predictions) or predictions
    if isinstance(predictions, protocol.Columns):
        return list(zip(predictions.names, predictions.arrays, strict=True))
    if isinstance(predictions, pd.DataFrame):
        return [(str(name), _array(column)) for name, column in predictions.items()]
    if isinstance(predictions, pd.Series):
        return [(str(predictions.name or DEFAULT_OUTPUT), _array(predictions))]
    if isinstance(predictions, dict):
        return [(str(k), np.asarray(v)) for k, v in predictions.items()]
    return [(DEFAULT_OUTPUT, np.asarray(predictions))]


def _array(column: pd.Series) -> np.ndarray:
    values: np.ndarray
    if isinstance(column.dtype, np.dtype):
        values = column.to_numpy()
    else:  # nullable and Arrow types
        values = column.to_numpy(dtype=object, na_value=None)
    return values


def _datatype(dtype: np.dtype[Any]) -> str:
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind == "f":
        return f"FP{8 * dtype.itemsize}"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{8 * dtype.itemsize}"
    return "BYTES"


def _output(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """One output tensor's JSON and, when binary, its raw bytes."""
    datatype = _datatype(array.dtype)
    output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if datatype == "BYTES":
        texts = [None if v is None else v if isinstance(v, str) else str(v) for v in array.ravel()]
        if not binary:
            output["data"] = texts
            return output, None
        encoded = [(t or "").encode() for t in texts]
        chunk = b"".join(chain.from_iterable((_LENGTH.pack(len(e)), e) for e in encoded))
    elif not binary:
        flat = array.ravel()
        output["data"] = flat if flat.flags.c_contiguous else flat.tolist()
        return output, None
    else:
        chunk = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    output["parameters"] = {"binary_data_size": len(chunk)}
    return output, chunk


# -- metadata ------------------------------------------------------------------------------------


def _tensors(schema: Schema | None) -> list[Tensor]:
    if schema is None:
        return []
    tensors = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name or f"input-{index}"
        if isinstance(spec, TensorSpec):
            shape = [-1 if d is None else int(d) for d in spec.shape]
            tensors.append(Tensor(name, _datatype(spec.type), shape))
        elif isinstance(spec, ColSpec):
            kind = spec.type.name if isinstance(spec.type, DataType) else "string"
            tensors.append(Tensor(name, SIGNATURE_DATATYPES.get(kind, "BYTES"), [-1]))
    return tensors
