"""Reading a spec YAML file while keeping where every key and value was written."""

from __future__ import annotations

from pathlib import Path

import yaml

from cellc.errors import Location, SpecError, short_path
from cellc.spec.ast import Origin

MAX_SPEC_BYTES = 256 * 1024  # a spec is a few lines; refuse anything absurd before parsing it


class YamlSource:
    """A parsed YAML mapping plus positions of its keys and values."""

    def __init__(self, path: Path):
        self.path = path
        self.file = short_path(path)
        try:
            if not path.is_file():  # a device or pipe could be endless (/dev/zero)
                raise SpecError(f"spec file not found: {self.file}" if not path.exists()
                                else f"{self.file} is not a regular file; not a spec file")
            with path.open("rb") as stream:
                raw = stream.read(MAX_SPEC_BYTES + 1)
        except OSError as err:
            raise SpecError(f"cannot read spec file {self.file}: {err.strerror}") from None
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"{self.file} is larger than {MAX_SPEC_BYTES // 1024} KiB; not a spec file")
        try:
            self.text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(f"{self.file} is not UTF-8 text (byte {err.start})") from None
        self.lines = self.text.splitlines()
        try:
            self._refuse_aliases()
            node = yaml.compose(self.text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(self.text)
        except yaml.MarkedYAMLError as err:
            problem, mark = _plain_words(err)
            raise SpecError(f"bad YAML: {problem}", self._location(mark.line, mark.column) if mark else None) from None
        except yaml.reader.ReaderError as err:  # a character YAML refuses (NUL, other controls)
            line0 = self.text.count("\n", 0, err.position)
            column0 = err.position - (self.text.rfind("\n", 0, err.position) + 1)
            code = err.character if isinstance(err.character, int) else ord(err.character)
            raise SpecError(f"bad YAML: character U+{code:04X} is not allowed in YAML text",
                            self._location(line0, column0)) from None
        except yaml.YAMLError as err:
            raise SpecError(f"bad YAML in {self.file}: {err}") from None
        except RecursionError:  # PyYAML composes nested collections recursively
            raise SpecError(f"bad YAML in {self.file}: nested too deeply; not a spec file") from None
        if not isinstance(self.data, dict) or not isinstance(node, yaml.MappingNode):
            raise SpecError("a spec file must be a YAML mapping (name: ..., equations: ...)", self._location(0, 0))
        self._check_keys(node)
        self.keys: dict[str, yaml.Node] = {}
        self.values: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            self.keys[str(key_node.value)] = key_node
            self.values[str(key_node.value)] = value_node

    def _refuse_aliases(self) -> None:
        """Anchors and aliases (``&a``, ``*a``) are refused before anything builds the document: a spec never
        needs them, and nested aliases expand exponentially ('billion laughs') in whatever walks the values.
        Parse events are read one at a time, in time and memory linear in the file."""
        for event in yaml.parse(self.text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                mark = event.start_mark
                raise SpecError("bad YAML: anchors and aliases (&name, *name) are not allowed in a spec; write "
                                "the value out", self._location(mark.line, mark.column))

    def _check_keys(self, node: yaml.Node) -> None:
        """Every mapping's keys, at any depth: text, each once (PyYAML keeps the last of two equal keys,
        and a spec must not say two things), and no merge keys ('<<' copies another mapping's keys in
        unseen, past this check)."""
        stack, visited = [node], set()
        while stack:  # iterative: the file is untrusted, its nesting may be deep
            node = stack.pop()
            if id(node) in visited:  # an alias is the node itself: once (a self-alias would loop, nested
                continue  # aliases multiply: a 'billion laughs' file)
            visited.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
            if not isinstance(node, yaml.MappingNode):
                continue
            seen = set()
            for key_node, value_node in node.value:
                where = self.node_location(key_node)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise SpecError("bad YAML: merge keys ('<<') are not allowed in a spec; write the keys out", where)
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:bool":
                    raise SpecError(f"bad YAML: key '{key_node.value}' reads as a true/false value; quote it: "
                                    f"'{key_node.value}':", where)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                    raise SpecError("bad YAML: keys are names, not numbers, nulls or collections", where)
                if key_node.value in seen:
                    raise SpecError(f"bad YAML: key '{key_node.value}' appears twice", where)
                seen.add(key_node.value)
                stack.append(value_node)

    def _location(self, line0: int, column0: int) -> Location:
        source = self.lines[line0] if 0 <= line0 < len(self.lines) else None
        return Location(self.file, line0 + 1, column0 + 1, source)

    def node_location(self, node: yaml.Node) -> Location:
        return self._location(node.start_mark.line, node.start_mark.column)

    def location_of(self, loc: tuple) -> Location:
        """Best location for a pydantic error path such as ('edits', 2) or ('initial', 'c')."""
        if not loc:
            return self._location(0, 0)
        key = str(loc[0])
        if key not in self.keys:
            return self._location(0, 0)
        node = self.values[key]
        if len(loc) == 1:
            # Unknown keys are reported at the key; bad values at the value.
            return self.node_location(self.keys[key] if not _is_scalar(node) else node)
        if isinstance(node, yaml.SequenceNode) and isinstance(loc[1], int) and loc[1] < len(node.value):
            return self.node_location(node.value[loc[1]])
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if str(k.value) == str(loc[1]):
                    return self.node_location(v if len(loc) > 2 else k)
        return self.node_location(node)

    def mapping_key_location(self, key: str, sub: str) -> Location:
        node = self.values.get(key)
        if isinstance(node, yaml.MappingNode):
            for k, _ in node.value:
                if str(k.value) == sub:
                    return self.node_location(k)
        return self.location_of((key,))

    def scalar_origin(self, node: yaml.ScalarNode) -> Origin:
        """Map positions inside a scalar's text back to the file."""
        line0 = node.start_mark.line
        if node.style in ("|", ">"):
            # Block scalar: content starts on the next line, indented uniformly.
            first = line0 + 1
            indent = 0
            for raw in self.lines[first:]:
                if raw.strip():
                    indent = len(raw) - len(raw.lstrip(" "))
                    break
            return Origin(self.file, self.lines, first + 1, indent)
        quote = 1 if node.style in ("'", '"') else 0
        # exact only where the file holds the value as it is (no escapes, no folding)
        written = self.text[node.start_mark.index + quote:node.end_mark.index - quote]
        folds = self._folds(node) if node.style is None and node.end_mark.line > line0 else None
        return Origin(self.file, self.lines, line0 + 1, node.start_mark.column + quote, exact=written == node.value,
                      folds=folds)

    def _folds(self, node: yaml.ScalarNode) -> list[tuple[int, int, int]] | None:
        """Where each file line of a plain scalar folded over several lines starts in its value (YAML joins
        the lines with one space, their indentation dropped); None where the value is not that join (blank
        lines or comments inside)."""
        pieces, folds, offset = [], [], 0
        for line0 in range(node.start_mark.line, node.end_mark.line + 1):
            raw = self.lines[line0] if line0 < len(self.lines) else ""
            start = node.start_mark.column if line0 == node.start_mark.line else len(raw) - len(raw.lstrip(" \t"))
            end = node.end_mark.column if line0 == node.end_mark.line else len(raw)
            piece = raw[start:end].rstrip(" \t")
            if not piece:
                continue
            folds.append((offset, line0 + 1, start + 1))
            pieces.append(piece)
            offset += len(piece) + 1
        return folds if " ".join(pieces) == node.value else None

    def origin_of(self, key: str, index: int | None = None) -> Origin:
        node = self.values[key]
        if index is not None:
            node = node.value[index]
        return self.scalar_origin(node)


def _plain_words(err: yaml.MarkedYAMLError) -> tuple[str, yaml.Mark | None]:
    """PyYAML's problem in plain words, and where to show it: the indentation mistakes people make in a spec
    ("expected <block end>, but found '<block mapping start>'" says nothing to most readers)."""
    problem, mark, context = err.problem or err.context or "invalid YAML", err.problem_mark or err.context_mark, \
        err.context_mark
    if problem.startswith("expected <block end>"):
        where = f" (it began on line {context.line + 1}, column {context.column + 1})" if context else ""
        return (f"this line is indented differently from the block above it{where}: line keys and '- ' items up "
                "with their siblings (spaces only)"), mark
    if problem == "mapping values are not allowed here":
        return ("a ':' where no key can start: if this line is a key, it is indented under the line above; line it "
                "up with its siblings. If the ':' belongs to a value, put the value in quotes"), mark
    if problem == "could not find expected ':'" and context is not None:  # shown where the would-be key starts
        return ("this line is neither 'key: value' nor a '- ' item: add the ':' (and a value), or indent it as "
                "part of the value above"), context
    if "'\\t'" in problem or "\\t" in problem:
        return "a tab character: YAML indents with spaces only", mark
    if problem.startswith("did not find expected key") or problem.startswith("did not find expected '-'"):
        return (f"{problem}: this line is indented differently from the lines above it; line keys and '- ' "
                "items up with their siblings"), mark
    return problem, mark


def _is_scalar(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode)
