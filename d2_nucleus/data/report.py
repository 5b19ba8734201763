# -*- coding: utf-8 -*-
"""What a data preparation step did: counts, skipped masks and warnings, for the final report."""
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Tuple

__all__ = ["DataReport"]


@dataclass
class DataReport:
    """
    images / nuclei: written to the output. skipped: masks left out, by reason. warnings: (kind,
    message) pairs, each message naming the file; kinds are short tags such as "non-binary".
    """

    images: int = 0
    nuclei: int = 0
    test_images: int = 0
    skipped: Counter = field(default_factory=Counter)
    warnings: List[Tuple[str, str]] = field(default_factory=list)
    ignored_entries: int = 0

    def warn(self, kind: str, message: str) -> None:
        self.warnings.append((kind, message))

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        self.warn(reason, message)

    def merge(self, other: "DataReport") -> "DataReport":
        self.images += other.images
        self.nuclei += other.nuclei
        self.test_images += other.test_images
        self.skipped.update(other.skipped)
        self.warnings.extend(other.warnings)
        self.ignored_entries += other.ignored_entries
        return self

    def warning_counts(self) -> Counter:
        return Counter(kind for kind, _ in self.warnings)

    def summary(self, max_warnings: int = 20) -> str:
        """Multi-line human-readable report; at most ``max_warnings`` warnings are listed in full."""
        skipped = sum(self.skipped.values())
        lines = [
            f"images: {self.images} train, {self.test_images} test",
            f"nuclei: {self.nuclei} written, {skipped} skipped"
            + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(self.skipped.items()))})" if skipped else ""),
        ]
        counts = self.warning_counts()
        lines.append(
            f"warnings: {len(self.warnings)}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else "")
        )
        if self.ignored_entries:
            lines.append(f"ignored hidden/checkpoint entries: {self.ignored_entries}")
        for kind, msg in self.warnings[:max_warnings]:
            lines.append(f"  [{kind}] {msg}")
        if len(self.warnings) > max_warnings:
            lines.append(f"  ... and {len(self.warnings) - max_warnings} more")
        return "\n".join(lines)
