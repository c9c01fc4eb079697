"""Reading what workflows compare out of a fetched page: its text as lines (a block element
starts a new line, whitespace inside a line collapses), and repeated items with fields."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

# Elements whose boundaries break lines, as a browser lays them out.
_BLOCK_TAGS = (
    "address article aside blockquote body br dd details dialog div dl dt fieldset "
    "figcaption figure footer form h1 h2 h3 h4 h5 h6 header hr html li main nav ol p "
    "pre section summary table tbody td tfoot th thead tr ul option caption"
)
BLOCK = frozenset(_BLOCK_TAGS.split())
# Elements whose content is never text a reader sees.
_HIDDEN_TAGS = "script style noscript template head title svg"
HIDDEN = frozenset(_HIDDEN_TAGS.split())


class SelectorError(ValueError):
    """A CSS selector the parser refuses."""


@dataclass(frozen=True)
class Item:
    """One repeated container's fields, by name."""

    fields: dict[str, str]


def parse(html: str) -> LexborHTMLParser:
    return LexborHTMLParser(html)


def select(tree: LexborHTMLParser, selector: str) -> list[LexborNode]:
    try:
        return list(tree.css(selector))
    except SelectolaxError as exc:
        raise SelectorError(f"invalid CSS selector {selector!r}: {exc}") from None


def lines(tree: LexborHTMLParser, selector: str) -> list[str] | None:
    """The visible text lines of every element matching `selector` (the body when empty),
    in page order; None when the selector matches nothing."""
    if selector:
        scopes = select(tree, selector)
    else:
        scopes = [n for n in [tree.body or tree.root] if n is not None]
    if not scopes:
        return None
    out: list[str] = []
    for scope in scopes:
        out.extend(_node_lines(scope))
    return out


def _node_lines(root: LexborNode) -> list[str]:
    """Text of `root` as lines. Iterative, so a deeply nested page cannot exhaust the stack."""
    parts: list[str] = [""]
    stack: list[LexborNode | None] = [root]
    while stack:
        node = stack.pop()
        if node is None:  # the end of a block element
            parts.append("")
            continue
        tag = node.tag or ""
        if tag == "-text":
            parts[-1] += node.text_content or ""
            continue
        if tag in HIDDEN or tag.startswith("-"):  # comments, doctype
            continue
        if tag in BLOCK:
            parts.append("")
            stack.append(None)
        children = list(node.iter(include_text=True))
        stack.extend(reversed(children))
    return [text for text in (" ".join(p.split()) for p in parts) if text]


def text(tree: LexborHTMLParser) -> str:
    """The page's visible text, one line per block."""
    return "\n".join(lines(tree, "") or [])


def items(
    tree: LexborHTMLParser, item_selector: str, fields: dict[str, str], base_url: str
) -> list[Item]:
    """Every container matching `item_selector` with its fields. A field's selector may end
    in `@attribute`; `href` and `src` values are made absolute against `base_url`."""
    found = []
    for container in select(tree, item_selector):
        values = {}
        for name, spec in fields.items():
            selector, attribute = split_field(spec)
            node = container if selector == "" else _first(container, selector)
            values[name] = _value(node, attribute, base_url)
        found.append(Item(values))
    return found


def next_link(tree: LexborHTMLParser, selector: str, base_url: str) -> str | None:
    """The absolute URL of the first match's `href`, if there is one."""
    nodes = select(tree, selector)
    href = nodes[0].attributes.get("href") if nodes else None
    return urljoin(base_url, href) if href else None


def split_field(spec: str) -> tuple[str, str]:
    """`a.title@href` -> (`a.title`, `href`); `.title` -> (`.title`, ``)."""
    selector, at, attribute = spec.rpartition("@")
    if not at or not attribute or any(c in attribute for c in " ]=\"'"):
        return spec, ""
    return selector.strip(), attribute


def _first(container: LexborNode, selector: str) -> LexborNode | None:
    try:
        return container.css_first(selector)
    except SelectolaxError as exc:
        raise SelectorError(f"invalid CSS selector {selector!r}: {exc}") from None


def _value(node: LexborNode | None, attribute: str, base_url: str) -> str:
    if node is None:
        return ""
    if not attribute:
        return " ".join((node.text() or "").split())
    value = node.attributes.get(attribute) or ""
    if value and attribute in {"href", "src"}:
        return urljoin(base_url, value)
    return value
