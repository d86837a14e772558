"""XMP sidecars that photo managers read (darktable, digiKam, Immich, Lightroom).

Written with the standard library's ElementTree on RDF/XML: python-xmp-toolkit would need
Debian's exempi, and the few properties we own are simple. Merging, never clobbering, is the
point: an existing sidecar keeps every element and attribute it had (ratings, labels, darktable
history, other namespaces, a person's keywords). Our own keywords are remembered in our namespace
so a re-run replaces exactly those; a person's are never removed.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import Any
from collections.abc import Iterable

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "smolvlm": "https://github.com/smolvlm-watch/ns/1.0/",
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
PACKET_END = '\n<?xpacket end="w"?>\n'


class XmpError(Exception):
    pass


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(value: str) -> str:
    """Drop the control characters XML 1.0 cannot hold (a degenerate answer may contain them)."""
    return _NOT_XML.sub("", value)


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _register(extra: Iterable[tuple[str, str]] = ()) -> None:
    for prefix, uri in list(NS.items()) + list(extra):
        if prefix and not prefix.startswith("ns"):
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:
                pass


def _parse(data: bytes) -> tuple[ET.Element, list[tuple[str, str]]]:
    """The x:xmpmeta root (created around a bare rdf:RDF) and the file's own prefixes."""
    prefixes: list[tuple[str, str]] = []
    try:
        for _event, item in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            prefixes.append(item)
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise XmpError(f"not well-formed XML ({exc})") from None
    if root.tag == _q("rdf", "RDF"):
        meta = ET.Element(_q("x", "xmpmeta"))
        meta.append(root)
        root = meta
    if root.tag != _q("x", "xmpmeta") or root.find(_q("rdf", "RDF")) is None:
        raise XmpError("not an XMP packet (no x:xmpmeta / rdf:RDF)")
    return root, prefixes


def _new() -> ET.Element:
    meta = ET.Element(_q("x", "xmpmeta"))
    ET.SubElement(meta, _q("rdf", "RDF"))
    return meta


_CONTAINERS = {_q("rdf", "Bag"), _q("rdf", "Seq"), _q("rdf", "Alt")}


class Packet:
    """An XMP packet being edited in place."""

    def __init__(self, data: bytes | None):
        self.root, prefixes = _parse(data) if data else (_new(), [])
        _register(prefixes)
        rdf = self.root.find(_q("rdf", "RDF"))
        assert rdf is not None  # _parse and _new both make one
        self.rdf: ET.Element = rdf
        self.ours = self._description()

    def _description(self) -> ET.Element:
        for desc in self.rdf.findall(_q("rdf", "Description")):
            return desc
        desc = ET.SubElement(self.rdf, _q("rdf", "Description"))
        desc.set(_q("rdf", "about"), "")
        return desc

    def _find(self, prefix: str, name: str) -> ET.Element | None:
        return self._find_tag(_q(prefix, name))

    def _find_tag(self, tag: str) -> ET.Element | None:
        for desc in self.rdf.findall(_q("rdf", "Description")):
            found = desc.find(tag)
            if found is not None:
                return found
        return None

    def _attribute(self, prefix: str, name: str) -> tuple[ET.Element, str] | None:
        for desc in self.rdf.findall(_q("rdf", "Description")):
            if _q(prefix, name) in desc.attrib:
                return desc, desc.attrib[_q(prefix, name)]
        return None

    def items(self, prefix: str, name: str) -> list[str]:
        prop = self._find(prefix, name)
        if prop is None:
            return []
        return [li.text or "" for li in prop.iter(_q("rdf", "li"))]

    def set_list(self, prefix: str, name: str, values: list[str], container: str = "Bag") -> None:
        """The property's items replaced by ``values``, in the container it already has (a
        photo manager's rdf:Seq stays a Seq), else in ``container``."""
        prop = self._find(prefix, name)
        if prop is None:
            prop = ET.SubElement(self.ours, _q(prefix, name))
        kept = next((child.tag for child in prop if child.tag in _CONTAINERS), None)
        for child in list(prop):
            prop.remove(child)
        holder = ET.SubElement(prop, kept or _q("rdf", container))
        for value in values:
            ET.SubElement(holder, _q("rdf", "li")).text = _clean(value)
        if not values:
            self._remove(prop)

    def _remove(self, prop: ET.Element) -> None:
        for desc in self.rdf.findall(_q("rdf", "Description")):
            if prop in list(desc):
                desc.remove(prop)

    def text(self, prefix: str, name: str) -> str | None:
        attr = self._attribute(prefix, name)
        if attr is not None:
            return attr[1]
        prop = self._find(prefix, name)
        return prop.text if prop is not None else None

    def set_text(self, prefix: str, name: str, value: str | None) -> None:
        attr = self._attribute(prefix, name)
        if attr is not None:
            del attr[0].attrib[_q(prefix, name)]
        prop = self._find(prefix, name)
        if value is None:
            if prop is not None:
                self._remove(prop)
            return
        if prop is None:
            prop = ET.SubElement(self.ours, _q(prefix, name))
        prop.text = _clean(value)

    def lang_alt(self, prefix: str, name: str) -> str | None:
        prop = self._find(prefix, name)
        if prop is None:
            return None
        for li in prop.iter(_q("rdf", "li")):
            if li.get(XML_LANG) == "x-default":
                return li.text or ""
        return None

    def set_lang_alt(self, prefix: str, name: str, value: str) -> None:
        prop = self._find(prefix, name)
        if prop is None:
            prop = ET.SubElement(self.ours, _q(prefix, name))
        alt = prop.find(_q("rdf", "Alt"))
        if alt is None:
            for child in list(prop):
                prop.remove(child)
            alt = ET.SubElement(prop, _q("rdf", "Alt"))
        for li in alt.findall(_q("rdf", "li")):
            if li.get(XML_LANG) == "x-default":
                li.text = _clean(value)
                return
        li = ET.Element(_q("rdf", "li"), {XML_LANG: "x-default"})
        li.text = _clean(value)
        alt.insert(0, li)

    def serialize(self) -> bytes:
        ET.indent(self.root, space=" ")
        body = ET.tostring(self.root, encoding="unicode")
        return (PACKET_BEGIN + body + PACKET_END).encode("utf-8")


def _merge_keywords(existing: list[str], previous_ours: list[str], ours: list[str]) -> tuple[list[str], list[str]]:
    """A person's keywords stay; the ones we added last time go; ours are added once
    (case-insensitive). Returns the merged list and the keywords we added this time."""
    old = {k.casefold() for k in previous_ours}
    kept = [k for k in existing if k.casefold() not in old]
    seen = {k.casefold() for k in kept}
    added = []
    for k in ours:
        if k.casefold() not in seen:
            added.append(k)
            seen.add(k.casefold())
    return kept + added, added


# Where tags go: (prefix, property, container, how a tag is spelled there, our record of what we added)
KEYWORD_FIELDS = (
    ("dc", "subject", "Bag", "{tag}", "Keywords"),
    ("digiKam", "TagsList", "Seq", "{parent}/{tag}", "TagsList"),
    ("lr", "hierarchicalSubject", "Bag", "{parent}|{tag}", "HierarchicalSubject"),
)
# In the hierarchical fields "/" (digiKam) and "|" (Lightroom, darktable) separate levels, and some
# readers split keywords on ","; no standard escape exists, so inside one tag they become look-alikes
# that separate nothing: "AC/DC" is one level there, and stays "AC/DC" in dc:subject.
LEVEL_SAFE = str.maketrans({"/": "\u2215", "|": "\u00a6", ",": "\u201a"})


def _spell(prefix: str, spelling: str, parent: str, tag: str) -> str:
    """A tag as one field spells it: under its parent, its own separators made harmless where
    they would make levels (everywhere but dc:subject)."""
    return spelling.format(parent=parent, tag=tag if prefix == "dc" else tag.translate(LEVEL_SAFE))


SEEDED = ("dc", "lr", "digiKam", "photoshop", "Iptc4xmpCore")  # what a new sidecar takes over from the photo's XMP
# The standard fields of a file's context (``places.context_record``) we fill: only while empty
# or still holding what we wrote there (our copy kept as smolvlm:PREFIX_NAME), never a value a
# person, a photo manager or the camera put in.
PLACE_FIELDS = (("photoshop", "City", "city"), ("photoshop", "State", "state"), ("photoshop", "Country", "country"),
                ("Iptc4xmpCore", "CountryCode", "country_code"))
TAKEN_FIELD = ("exif", "DateTimeOriginal")


def seeded(embedded_xmp: bytes | None, description: str | None, keywords: Iterable[str]) -> Packet:
    """A new sidecar, starting with what the photo itself says (from the camera or a person):
    its embedded XMP's dc:* and hierarchical keywords, then its EXIF/IPTC description and
    keywords. A reader that takes the sidecar as the only source (PhotoPrism) must not lose
    them; they are theirs, never replaced or removed by our re-runs."""
    packet = Packet(None)
    try:
        own = Packet(embedded_xmp) if embedded_xmp else None
    except XmpError:
        own = None  # a damaged embedded packet: the EXIF and IPTC fields still count
    if own is not None:
        for desc in own.rdf.findall(_q("rdf", "Description")):
            for prop in desc:
                if any(prop.tag.startswith("{" + NS[p] + "}") for p in SEEDED) and packet._find_tag(prop.tag) is None:
                    packet.ours.append(prop)
    _seed(packet, description, list(keywords))
    return packet


def _seed(packet: Packet, description: str | None, keywords: list[str]) -> None:
    if description and not packet.lang_alt("dc", "description"):
        packet.set_lang_alt("dc", "description", description)
    words = [k for k in keywords if k]
    if not words:
        return
    for prefix, name, container, _spelling, _record in KEYWORD_FIELDS:
        existing = packet.items(prefix, name)
        have = {k.casefold() for k in existing}
        spelled = [_spell(prefix, "{tag}", "", k) for k in words]
        packet.set_list(prefix, name, existing + [k for k in spelled if k.casefold() not in have], container)


CREATED = "Created"  # our mark on a sidecar we made ourselves: it holds no one else's data but the photo's own


def unmerge(data: bytes) -> bytes | None:
    """The sidecar ``data`` with everything we merged in taken out again (``prune`` of a file
    gone for good): our namespace, our keywords, the description while it is still our caption.
    None when nothing but ours is left (a sidecar we created, or one that held nothing else):
    the file may go. A person's rating, history and keywords stay, and so does the file."""
    p = Packet(data)
    created = p.text("smolvlm", CREATED) is not None
    if (caption := p.text("smolvlm", "Caption")) is not None and p.lang_alt("dc", "description") == caption:
        description = p._find("dc", "description")
        if description is not None:
            p._remove(description)
    for prefix, name, _container, _spelling, record in KEYWORD_FIELDS:
        ours = {k.casefold() for k in p.items("smolvlm", record)}
        existing = p.items(prefix, name)
        if ours and existing:
            p.set_list(prefix, name, [k for k in existing if k.casefold() not in ours])
    for prefix, name in [(f[0], f[1]) for f in PLACE_FIELDS] + [TAKEN_FIELD]:
        if (filled := p.text("smolvlm", f"{prefix}_{name}")) is not None and p.text(prefix, name) == filled:
            p.set_text(prefix, name, None)
    for desc in p.rdf.findall(_q("rdf", "Description")):
        for key in [k for k in desc.attrib if k.startswith("{" + NS["smolvlm"] + "}")]:
            del desc.attrib[key]
        for prop in [c for c in desc if c.tag.startswith("{" + NS["smolvlm"] + "}")]:
            desc.remove(prop)
    if created or not _holds_anything(p):
        return None
    return p.serialize()


def _fill(p: Packet, prefix: str, name: str, value: str | None) -> None:
    """A standard field set to ``value`` (removed for None) while it is empty or ours."""
    mine = f"{prefix}_{name}"
    current = p.text(prefix, name)
    if current is None or current == p.text("smolvlm", mine):
        p.set_text(prefix, name, value)
        p.set_text("smolvlm", mine, value)


def _holds_anything(p: Packet) -> bool:
    """Whether a packet still has any property (an element or attribute besides rdf:about)."""
    for desc in p.rdf.findall(_q("rdf", "Description")):
        if len(desc) or any(k != _q("rdf", "about") for k in desc.attrib):
            return True
    return False


def merge(data: bytes | None, caption: str | None, tags: list[str] | None, ocr: str | None,
          provenance: dict[str, Any], parent: str = "AI", packet: Packet | None = None,
          place: dict[str, Any] | None = None, taken_at: str | None = None) -> bytes:
    """The sidecar ``data`` (or ``packet``, a new one already seeded, or an empty one) with our
    results merged in; ``place`` (a context's) and ``taken_at`` into the standard fields photo
    managers read, where no one else's value is."""
    p = packet or Packet(data)
    for prefix, name, key in PLACE_FIELDS:
        _fill(p, prefix, name, str(place[key]) if place and place.get(key) else None)
    _fill(p, *TAKEN_FIELD, taken_at)
    if caption is not None:
        current = p.lang_alt("dc", "description")
        if not current or current == p.text("smolvlm", "Caption"):
            p.set_lang_alt("dc", "description", caption)  # ours, or empty: a person's text is never replaced
        p.set_text("smolvlm", "Caption", caption)
    if tags is not None:
        for prefix, name, container, spelling, record in KEYWORD_FIELDS:
            if "{parent}" in spelling and not parent:
                spelling = "{tag}"
            spelled = [_spell(prefix, spelling, parent, t) for t in tags]
            merged, added = _merge_keywords(p.items(prefix, name), p.items("smolvlm", record), spelled)
            p.set_list(prefix, name, merged, container)
            p.set_list("smolvlm", record, added)
    if ocr is not None:
        p.set_text("smolvlm", "OCRText", ocr)
    for key, value in provenance.items():
        p.set_text("smolvlm", key, str(value) if value is not None else None)
    return p.serialize()
