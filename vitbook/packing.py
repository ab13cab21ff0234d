"""Patch n' Pack (Dehghani et al. 2023): put the token sequences of several images into
a few fixed-length sequences, so images of any size train together with no padding
beyond the end of each sequence.

Two strategies, one result. Both take the number of tokens of each image and a token
``budget`` (the length of one packed sequence) and return a :class:`Packing`: for every
image, which sequence holds it and at which offset.

- :func:`greedy` is the seed's (vit-pytorch's ``group_images_by_max_seq_len``): walk the
  images in order and open a new sequence whenever the next image does not fit.
- :func:`first_fit_decreasing` is the classic bin-packing heuristic: take the images
  from the longest down and put each in the first sequence with room for it. It never
  needs more than 11/9 OPT + 6/9 sequences (Dosa 2007); greedy in input order can need
  almost twice the optimum.

Pure Python on integers: no tensors, so the tests can examine it case by case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """Image ``image`` (its index in the input) occupies tokens
    ``offset : offset + length`` of packed sequence ``sequence``."""

    image: int
    sequence: int
    offset: int
    length: int


@dataclass(frozen=True)
class Packing:
    """Where every image went: ``placements[i]`` is image ``i``'s (input order)."""

    placements: tuple[Placement, ...]
    budget: int
    num_sequences: int

    @property
    def lengths(self) -> list[int]:
        """Real tokens in each packed sequence."""
        used = [0] * self.num_sequences
        for p in self.placements:
            used[p.sequence] += p.length
        return used

    def sequences(self) -> list[list[int]]:
        """The images of each sequence, in the order they sit in it."""
        groups: list[list[Placement]] = [[] for _ in range(self.num_sequences)]
        for p in self.placements:
            groups[p.sequence].append(p)
        return [[p.image for p in sorted(g, key=lambda p: p.offset)] for g in groups]

    @property
    def utilization(self) -> float:
        """Real tokens / all tokens when every sequence is ``budget`` long."""
        total = self.num_sequences * self.budget
        return sum(p.length for p in self.placements) / total if total else 1.0


def padding_utilization(lengths) -> float:
    """Real tokens / all tokens when every image is padded to the longest one (what a
    plain batched ViT would have to do with images of different sizes)."""
    lengths = list(lengths)
    return sum(lengths) / (len(lengths) * max(lengths)) if lengths else 1.0


def check_lengths(lengths, budget: int, sizes=None) -> list[int]:
    """The lengths as ints; a ValueError names the first image that cannot fit."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"token budget {budget!r} must be an int >= 1")
    lengths = [int(n) for n in lengths]
    if sizes is not None and len(sizes) != len(lengths):
        raise ValueError(f"{len(sizes)} sizes for {len(lengths)} token counts")
    for i, n in enumerate(lengths):
        if n < 1:
            raise ValueError(f"image {i} has {n} tokens; every image needs at least 1")
        if n > budget:
            size = f" of size {sizes[i][0]}x{sizes[i][1]}" if sizes is not None else ""
            raise ValueError(
                f"image {i}{size} has {n} tokens, more than the token budget {budget}: "
                "raise the budget, shrink the image or drop more of its tokens"
            )
    return lengths


def _placements(lengths, assignment, budget: int) -> Packing:
    """Offsets from an assignment image -> sequence, images kept in input order inside a
    sequence (``assignment`` must respect the budget)."""
    offsets: dict[int, int] = {}
    placements = []
    for i, (n, s) in enumerate(zip(lengths, assignment)):
        placements.append(Placement(i, s, offsets.get(s, 0), n))
        offsets[s] = offsets.get(s, 0) + n
    return Packing(tuple(placements), budget, len(offsets))


def greedy(lengths, budget: int, sizes=None) -> Packing:
    """The seed's sequential grouping: fill the current sequence in input order, open a
    new one when the next image does not fit."""
    lengths = check_lengths(lengths, budget, sizes)
    assignment, sequence, used = [], 0, 0
    for n in lengths:
        if used + n > budget:
            sequence, used = sequence + 1, 0
        assignment.append(sequence)
        used += n
    return _placements(lengths, assignment, budget)


def first_fit_decreasing(lengths, budget: int, sizes=None) -> Packing:
    """Longest image first, each into the first sequence with room for it."""
    lengths = check_lengths(lengths, budget, sizes)
    free: list[int] = []  # room left in each open sequence
    assignment = [0] * len(lengths)
    # a stable sort: equal lengths keep their input order, so the result is reproducible
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        s = next((s for s, room in enumerate(free) if room >= n), len(free))
        if s == len(free):
            free.append(budget)
        free[s] -= n
        assignment[i] = s
    return _placements(lengths, assignment, budget)


STRATEGIES = {"greedy": greedy, "ffd": first_fit_decreasing}


def pack(lengths, budget: int, strategy: str = "ffd", sizes=None) -> Packing:
    """``STRATEGIES[strategy](lengths, budget, sizes)``."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"packing strategy {strategy!r} is not one of {tuple(STRATEGIES)}"
        )
    return STRATEGIES[strategy](lengths, budget, sizes)


__all__ = [
    "Placement",
    "Packing",
    "greedy",
    "first_fit_decreasing",
    "pack",
    "padding_utilization",
    "STRATEGIES",
]
