"""What a packed population is: the ``mlp`` search space's architecture, shared by every member, with the
hyperparameters that do not change shapes (seed, learning rate, dropout, L2) given per member; and the
initializer seeds each member's layers derive from its seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

SHAPE_PARAMS = ("layers", "activation", "batchnorm", "optimizer")  # what members of one pack must share


def held_width(units: Sequence[int]) -> int:
    """The width a packed layer of members of ``units`` widths is held at: their width when they agree, else
    the next power of two of the widest (so packs of mixed widths fall into few shapes and reuse compiled steps)."""
    widest = max(int(u) for u in units)
    return widest if len(set(units)) == 1 else 1 << max(0, widest - 1).bit_length()


@dataclass
class PackedMLPSpec:
    """The ``mlp`` search space's architecture, with the shape-free hyperparameters given per member."""

    input_shape: tuple[int, ...]
    n_classes: int
    seeds: list[int]
    learning_rates: list[float]
    dropouts: list[float] = field(default_factory=list)
    l2s: list[float] = field(default_factory=list)
    layers: int = 2
    units: int = 128
    activation: str = "relu"
    optimizer: str = "adam"
    head_name: str = "digit"
    per_member_inputs: bool = False
    member_units: list[int] = field(default_factory=list)  # each member's own width (default: units)
    batchnorm: bool = False  # BatchNormalization between each hidden Dense and its activation, as the mlp space

    def __post_init__(self) -> None:
        m = len(self.seeds)
        if m < 1:
            raise ValueError("a packed population needs at least one member (one seed each)")
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.dropouts = list(self.dropouts) or [0.0] * m
        self.l2s = list(self.l2s) or [0.0] * m
        self.member_units = [int(u) for u in self.member_units] or [int(self.units)] * m
        if len(self.member_units) != m or not all(1 <= u <= self.units for u in self.member_units):
            raise ValueError(f"PackedMLPSpec.member_units needs one width per member ({m}), each between 1 and "
                             f"units={self.units}; got {self.member_units}")
        for name in ("learning_rates", "dropouts", "l2s"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"PackedMLPSpec.{name} needs one value per member ({m}); got {getattr(self, name)}")

    @property
    def members(self) -> int:
        return len(self.seeds)

    @classmethod
    def from_params(cls, params: Sequence[dict[str, Any]], *, input_shape: Sequence[int], n_classes: int,
                    seeds: Sequence[int] | None = None, head_name: str = "digit",
                    per_member_inputs: bool = False) -> "PackedMLPSpec":
        """From one ``mlp``-space parameter dict per member (``search_spaces/mlp.py`` names and defaults).

        Shape-changing parameters (layers, activation, batchnorm, optimizer) must agree across members;
        ``units`` (held at :func:`held_width`, each member masked to its own), ``learning_rate``, ``dropout``,
        ``use_l2``/``l2`` and the seed may differ.
        """
        params = [dict(p) for p in params]
        if not params:
            raise ValueError("from_params needs one parameter dict per member; got none")
        defaults = {"layers": 2, "activation": "relu", "batchnorm": False, "optimizer": "adam"}
        widths = [int(p.get("units", 128)) for p in params]
        first = {k: params[0].get(k, defaults[k]) for k in SHAPE_PARAMS}
        for i, p in enumerate(params[1:], start=1):
            other = {k: p.get(k, defaults[k]) for k in SHAPE_PARAMS}
            if other != first:
                raise ValueError(f"member {i} differs from member 0 in a shape parameter: {other} vs {first}; "
                                 "only units, learning_rate, dropout, l2 and seed may differ within a packed "
                                 "population")
        seeds = list(seeds) if seeds is not None else [int(p.get("seed", i)) for i, p in enumerate(params)]
        return cls(
            input_shape=tuple(input_shape), n_classes=int(n_classes), seeds=[int(s) for s in seeds],
            learning_rates=[float(p.get("learning_rate", 1e-3)) for p in params],
            dropouts=[float(p.get("dropout", 0.0)) for p in params],
            l2s=[float(p.get("l2") or 0.0) if p.get("use_l2", False) else 0.0 for p in params],
            layers=int(first["layers"]), units=held_width(widths), member_units=widths,
            activation=str(first["activation"]), batchnorm=bool(first["batchnorm"]),
            optimizer=str(first["optimizer"]), head_name=head_name, per_member_inputs=per_member_inputs)

    def member_params(self, m: int) -> dict[str, Any]:
        """Member ``m``'s hyperparameters in the ``mlp`` space's names (for records and unpacked models)."""
        return {"layers": self.layers, "units": self.member_units[m], "activation": self.activation,
                "batchnorm": self.batchnorm,
                "dropout": self.dropouts[m], "use_l2": self.l2s[m] > 0, "l2": self.l2s[m] or None,
                "optimizer": self.optimizer, "learning_rate": self.learning_rates[m], "seed": self.seeds[m]}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Derived seeds stay below 2**31 - 1: JAX's random keys take uint32 seeds (a trial's seed is up to 2**31, times
# 1009 overflowed them); the bias adds 1. Small member seeds (0..N-1) derive the same seeds as before.
_SEED_RANGE = 2**31 - 1


def derived_seed(seed: int, offset: int) -> int:
    """Seed number ``offset`` derived from a member's ``seed``, below ``2**31 - 1``."""
    return (int(seed) * 1009 + offset) % _SEED_RANGE


def layer_seeds(spec: PackedMLPSpec, layer: int) -> list[int]:
    """Distinct initializer seeds per (member, layer); the bias uses ``seed + 1``."""
    return [derived_seed(s, 2 * layer) for s in spec.seeds]
