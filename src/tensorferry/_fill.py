"""Fill values: the one rule deciding whether a value fits a dtype, and its bytes.

``Environment.fill`` applies it before any backend sees the fill, so every
backend refuses and accepts the same values. The rule: a value fits when
converting it to the dtype loses nothing but floating-point precision.

* bool: ``True``/``False`` and the integers 0 and 1.
* integers: integral numbers (``3``, ``np.int64(3)``, ``3.0``) within the dtype's range.
* floats and complex: real (complex for complex dtypes) numbers whose conversion
  does not overflow to infinity; NaN and infinities themselves fit.
* ``S``/``U``: ``bytes``/``str`` no longer than an element; unstructured ``V``:
  ``bytes`` of exactly one element.
* structured: a tuple with one fitting value per field.
* datetime/timedelta: ``numpy.datetime64``/``timedelta64`` (and ISO strings for
  datetimes, integers for timedeltas) that convert to the dtype's unit exactly.
* any dtype: a numpy scalar or 0-d array of exactly that dtype.

Everything else raises ``ValueError``: strings for numbers, ``1000`` for int8,
``np.float64(300.0)`` for uint8, ``1e6`` for float16, sequences.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

import numpy as np

__all__ = ["element_bytes"]

Element = np.ndarray[Any, np.dtype[Any]]


def element_bytes(value: object, dtype: np.dtype[Any]) -> bytes:
    """The bytes of one element of ``dtype`` holding ``value``.

    Raises ``ValueError`` naming the value, the dtype and what would fit, when
    ``value`` does not fit ``dtype`` under the module's rule.
    """
    return _element(value, dtype).tobytes()


class _Misfit(ValueError):
    pass


def _element(value: object, dtype: np.dtype[Any]) -> Element:
    try:
        return _convert(value, dtype)
    except _Misfit as exc:
        text = repr(value)
        text = text if len(text) <= 60 else f"{text[:57]}..."
        raise ValueError(f"cannot convert {text} to {dtype}: {exc}") from None


def _convert(value: object, dtype: np.dtype[Any]) -> Element:
    if isinstance(value, np.ndarray):
        if value.shape != ():
            raise _Misfit(f"fill takes a scalar value, got an array of shape {value.shape}")
        value = value[()]
    if isinstance(value, np.generic) and value.dtype == dtype:
        return np.array(value, dtype)  # exactly the dtype: fits by definition
    if isinstance(value, list | tuple | set | dict) and dtype.names is None:
        raise _Misfit(f"fill takes a scalar value, got a {type(value).__name__}")
    if isinstance(value, np.datetime64 | np.timedelta64) and dtype.kind not in "Mm":
        raise _Misfit(f"it is a {type(value).__name__}; expected a value of kind {dtype.kind!r}")
    if dtype.names is not None:
        return _structured(value, dtype)
    convert = _BY_KIND.get(dtype.kind)
    if convert is None:  # pragma: no cover - every fixed-size kind is listed
        raise _Misfit(f"dtype kind {dtype.kind!r} cannot be filled")
    return convert(value, dtype)


def _bool(value: object, dtype: np.dtype[Any]) -> Element:
    if isinstance(value, bool | np.bool_) or (
        isinstance(value, numbers.Integral) and int(value) in (0, 1)
    ):
        return np.array(bool(value), dtype)
    raise _Misfit("expected True, False, 0 or 1")


def _integer(value: object, dtype: np.dtype[Any]) -> Element:
    info = np.iinfo(dtype)
    expected = f"expected an integer from {info.min} to {info.max}"
    real: Any = value  # numbers.Real promises int() and float(); typeshed does not
    if isinstance(value, numbers.Integral):
        number = int(real)
    elif isinstance(value, numbers.Real):
        if not math.isfinite(float(real)) or real != int(real):
            raise _Misfit(f"it is not a whole number; {expected}")
        number = int(real)
    else:
        raise _Misfit(f"it is a {type(value).__name__}, not a number; {expected}")
    if not info.min <= number <= info.max:
        raise _Misfit(f"it is out of range; {expected}")
    return np.array(number, dtype)


def _floating(value: object, dtype: np.dtype[Any]) -> Element:
    real = dtype.kind == "f"
    wanted = numbers.Real if real else numbers.Complex
    expected = f"expected a {'real' if real else 'complex'} number that fits {dtype}"
    if not isinstance(value, wanted):
        raise _Misfit(f"it is a {type(value).__name__}; {expected}")
    try:
        with np.errstate(all="ignore"):
            result = np.array(value, dtype)
    except OverflowError:
        raise _Misfit(f"it overflows to infinity; {expected}") from None
    except (TypeError, ValueError) as exc:
        raise _Misfit(f"{exc}; {expected}") from None
    parts = [result] if real else [result.real, result.imag]
    number: Any = value
    originals = [number] if real else [complex(number).real, complex(number).imag]
    for part, original in zip(parts, originals, strict=True):
        if np.isinf(part) and not _is_infinite(original):
            raise _Misfit(f"it overflows to infinity; {expected} (at most {np.finfo(dtype).max})")
    return result


def _is_infinite(value: object) -> bool:
    return isinstance(value, float | np.floating) and bool(np.isinf(value))


def _bytes(value: object, dtype: np.dtype[Any]) -> Element:
    if not isinstance(value, bytes):
        raise _Misfit(f"it is a {type(value).__name__}; expected bytes")
    if len(value) > dtype.itemsize:
        raise _Misfit(f"it holds {len(value)} bytes; expected at most {dtype.itemsize}")
    return np.array(value, dtype)


def _text(value: object, dtype: np.dtype[Any]) -> Element:
    if not isinstance(value, str):
        raise _Misfit(f"it is a {type(value).__name__}; expected a str")
    limit = dtype.itemsize // 4
    if len(value) > limit:
        raise _Misfit(f"it holds {len(value)} characters; expected at most {limit}")
    return np.array(value, dtype)


def _void(value: object, dtype: np.dtype[Any]) -> Element:
    raw = value.tobytes() if isinstance(value, np.void) else value
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise _Misfit(f"expected bytes of exactly {dtype.itemsize} (one element)")
    return np.frombuffer(raw, dtype).reshape(())


def _datetime(value: object, dtype: np.dtype[Any]) -> Element:
    timedelta = dtype.kind == "m"
    scalar_type = np.timedelta64 if timedelta else np.datetime64
    unit: Any = np.datetime_data(dtype)[0]
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    try:
        if isinstance(value, scalar_type):
            source = value
        elif timedelta and integral:
            source = np.timedelta64(int(cast("int", value)), unit)
        elif not timedelta and isinstance(value, str):
            source = np.datetime64(value)
        else:
            raise _Misfit(
                f"it is a {type(value).__name__}; expected a numpy.{scalar_type.__name__}"
                + ("" if timedelta else " or an ISO 8601 string")
            )
        result = np.array(source, dtype)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, _Misfit):
            raise
        raise _Misfit(str(exc)) from None
    if not np.isnat(source) and result.astype(np.array(source).dtype) != source:
        raise _Misfit(f"it does not convert to {dtype} exactly; expected a value in its unit")
    return result


def _structured(value: object, dtype: np.dtype[Any]) -> Element:
    names = dtype.names or ()
    if not isinstance(value, tuple) or len(value) != len(names):
        raise _Misfit(f"expected a tuple of {len(names)} values, one per field {names}")
    result = np.zeros((), dtype)
    for name, field_value in zip(names, value, strict=True):
        field = dtype.fields[name][0]  # type: ignore[index]
        try:
            result[name] = _field(field_value, field)
        except _Misfit as exc:
            raise _Misfit(f"field {name!r}: {exc}") from None
    return result


def _field(value: object, dtype: np.dtype[Any]) -> Element:
    if dtype.subdtype is None:
        return _convert(value, dtype)
    base, shape = dtype.subdtype
    values = np.asarray(value, dtype=object)
    if values.shape != shape:
        raise _Misfit(f"expected values of shape {shape}, got shape {values.shape}")
    result = np.zeros(shape, base)
    for index in np.ndindex(shape):
        result[index] = _convert(values[index], base)
    return result


_BY_KIND = {
    "b": _bool,
    "i": _integer,
    "u": _integer,
    "f": _floating,
    "c": _floating,
    "S": _bytes,
    "U": _text,
    "V": _void,
    "M": _datetime,
    "m": _datetime,
}
