"""Frozen, typed records for the start-up path.

``@dataclass(frozen=True)`` builds each class with ``exec`` (about 0.3-0.5 ms
a class); the runtime defines two dozen of them on the way to every
``rootless run``. ``Record`` gives the same frozen, typed value objects
(fields from the annotations, defaults from class attributes, ``replace``,
``to_dict``, equality, ordering, hashing, repr) without generating code.
Used for the types on the path of ``rootless run`` (config, id maps,
references, OCI types, platforms, container specs and state).
"""

from __future__ import annotations

_MISSING = object()


class Record:
    """Subclass with annotated fields; instances are immutable."""

    _fields: tuple[str, ...] = ()
    _defaults: dict = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        for name in cls.__dict__.get("__annotations__", {}):
            if name.startswith("_") or name in fields:
                continue
            fields.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args, **kw):
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(fields)} arguments")
        d = self.__dict__
        for name, value in zip(fields, args):
            d[name] = value
        for name in fields[len(args):]:
            if name in kw:
                d[name] = kw.pop(name)
            elif name in self._defaults:
                v = self._defaults[name]
                d[name] = v.copy() if isinstance(v, (dict, list)) else v
            else:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown field {next(iter(kw))!r}")

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _values(self) -> tuple:
        return tuple(self.__dict__[f] for f in self._fields)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def _cmp(self, other, op):
        if type(other) is not type(self):
            return NotImplemented
        return op(self._values(), other._values())

    def __lt__(self, other):
        return self._cmp(other, tuple.__lt__)

    def __le__(self, other):
        return self._cmp(other, tuple.__le__)

    def __gt__(self, other):
        return self._cmp(other, tuple.__gt__)

    def __ge__(self, other):
        return self._cmp(other, tuple.__ge__)

    def __hash__(self):
        return hash((type(self).__name__,) + tuple(
            tuple(sorted(v.items())) if isinstance(v, dict) else v for v in self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{f}={self.__dict__[f]!r}" for f in self._fields) + ")"

    def replace(self, **changes):
        d = {f: self.__dict__[f] for f in self._fields}
        for k in changes:
            if k not in d:
                raise TypeError(f"{type(self).__name__}: unknown field {k!r}")
        d.update(changes)
        return type(self)(**d)

    def to_dict(self) -> dict:
        return {f: self.__dict__[f] for f in self._fields}

    def __reduce__(self):
        return (_rebuild, (type(self), self.to_dict()))


def _rebuild(cls, d):
    return cls(**d)
