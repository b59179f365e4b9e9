"""The report on one pickle: what loading it would look up, import and
run, what it ships by value and how many bytes that takes; as plain data
(the JSON output) and as text."""

from .. import _trust
from .._trust import DIRECT_HOWS, NATIVE
from .machine import Call, Machine, Opaque, Ref, SymDict, SymList, SymSet
from .shipped import attribute_sizes, classify, fill_class_files


def inspect_bytes(data):
    """The report (a dict of plain data) on the first pickle in ``data``."""
    return analyse(data)[1]


def analyse(data, **machine_options):
    """``(machine, report)`` for the first pickle in ``data``."""
    machine = Machine(**machine_options)
    machine.run(data)
    return machine, report_of(machine, data)


def report_of(machine, data):
    items = classify(machine.calls)
    attribute_sizes(items, machine.opcode_spans)
    fill_class_files(items)
    return {
        "size": machine.end,
        "trailing_bytes": len(data) - machine.end if isinstance(data, (bytes, bytearray)) else 0,
        "protocol": machine.protocol,
        "result": describe(machine.result, items),
        "references": reference_rows(machine),
        "shipped": [shipped_row(item) for item in items],
        "shipped_bytes": sum(item.own_size for item in items),
        "persistent_ids": machine.persistent_ids,
    }


def reference_rows(machine):
    rows = {}
    for ref in machine.refs:
        key = (ref.module, ref.name, ref.how)
        if key not in rows:
            rows[key] = {
                "module": ref.module,
                "name": ref.name,
                "how": ref.how,
                "direct": ref.how in DIRECT_HOWS,
                "offset": ref.offset,
                "count": 0,
                "calls": machine.call_counts.get(ref.dotted, 0),
            }
        rows[key]["count"] += 1
    return list(rows.values())


def shipped_row(item):
    row = {
        "kind": item.kind,
        "name": item.name,
        "qualname": item.qualname,
        "module": item.module,
        "filename": item.filename,
        "firstlineno": item.firstlineno,
        "offset": item.call.start,
        "bytes": item.size,
        "own_bytes": item.own_size,
        "inside": item.owner.display_name if item.owner is not None else None,
    }
    if item.kind == "function":
        row["globals"] = item.globals
        row["submodules"] = item.submodules
    if item.kind in ("class", "enum", "module"):
        row["members"] = item.members
    return row


def describe(value, items):
    for item in items:
        if item.call is value:
            return f"{item.kind} {item.display_name}"
    if isinstance(value, Call):
        for item in items:
            if item.call is value.func and item.kind in ("class", "enum"):
                return f"an instance of {item.display_name}"
        func = value.func
        return f"the result of calling {func.dotted}" if isinstance(func, Ref) else "a call result"
    if isinstance(value, Ref):
        return f"module {value.module}" if value.name is None else f"the global {value.dotted}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} items"
    if isinstance(value, SymList):
        return f"a list of {len(value.items)} items"
    if isinstance(value, SymDict):
        return f"a dict of {len(value.pairs)} items"
    if isinstance(value, SymSet):
        return f"a {'frozenset' if value.frozen else 'set'} of {len(value.items)} items"
    if isinstance(value, Opaque):
        return f"a {value.what}"
    return f"a {type(value).__name__}"


def refusal_rows(machine, report, allowed):
    """Everything loading this pickle under ``allowed`` would be refused for,
    as rows: the reference rows with a "reason", then the calls and changes
    the rules refuse (how "call", "modified", "class shipped by value"...)."""
    rows = {(r["module"], r["name"], r["how"]): r for r in report["references"]}
    found = []
    for refusal in _trust.Policy(allowed).refusals(machine):
        row = rows.get((refusal.module, refusal.name, refusal.how))
        if row is None:
            row = {
                "module": refusal.module,
                "name": refusal.name,
                "how": refusal.how,
                "direct": False,
                "offset": refusal.offset,
                "count": 1,
                "calls": 0,
            }
        found.append(dict(row, reason=refusal.reason))
    return found


# ---------------------------------------------------------------------------
# As text.


def format_reference(row):
    target = row["module"] if row["name"] is None else f"{row['module']}.{row['name']}"
    how = {"import": "imported", "getattr": "via getattr"}.get(row["how"], row["how"])
    extra = f", called {row['calls']}x" if row["calls"] else ""
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"{target}  ({how} at offset {row['offset']}{extra}){reason}"


def format_source(row):
    if not row["filename"]:
        return "-"
    return f"{row['filename']}:{row['firstlineno']}" if row["firstlineno"] else row["filename"]


def format_report(report, source, allowed=None, found=()):
    lines = [f"{source}: {report['size']} bytes, protocol {report['protocol']}"]
    lines.append(f"  top-level object: {report['result']}")
    if report["trailing_bytes"]:
        lines.append(f"  ({report['trailing_bytes']} bytes after the STOP opcode not inspected)")
    if report["persistent_ids"]:
        lines.append(f"  {report['persistent_ids']} persistent ids (loading needs a persistent_load)")
    direct = [r for r in report["references"] if r["how"] in DIRECT_HOWS]
    ours = [r["name"] for r in report["references"] if r["how"] == "reconstructor"]
    derived = [r for r in report["references"] if r["how"] not in DIRECT_HOWS + ("reconstructor",)]
    lines.append("")
    lines.append(f"globals loading looks up ({len(direct)}):")
    lines.extend("  " + format_reference(row) for row in direct or [])
    if not direct:
        lines.append("  none")
    if ours:
        lines.append(f"  cloudpickle-rs reconstructors used: {', '.join(ours)}")
    if derived:
        lines.append("")
        lines.append(f"imported or looked up by calls while loading ({len(derived)}):")
        lines.extend("  " + format_reference(row) for row in derived)
    lines.append("")
    shipped = report["shipped"]
    lines.append(f"shipped by value ({len(shipped)}):")
    if shipped:
        lines.extend(format_shipped_table(shipped))
        lines.append(f"  {report['shipped_bytes']} of {report['size']} bytes ship these by value")
    else:
        lines.append("  none")
    if allowed is not None:
        lines.append("")
        lines.append("allowed modules: " + (", ".join(allowed) or "none") + f" (and the reconstructors of {NATIVE})")
        if found:
            lines.append(f"NOT ALLOWED ({len(found)}):")
            lines.extend("  " + format_reference(row) for row in found)
        else:
            lines.append("every reference is allowed")
    return "\n".join(lines) + "\n"


def format_shipped_table(shipped):
    header = ("kind", "name", "source", "bytes", "own")
    rows = [(r["kind"], shipped_label(r), format_source(r), str(r["bytes"]), str(r["own_bytes"])) for r in shipped]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    out = []
    for row in [header, *rows]:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        cells += [row[i].rjust(widths[i]) for i in range(3, 5)]
        out.append("  " + "  ".join(cells))
    return out


def shipped_label(row):
    if row["kind"] == "module":
        label = row["name"]
    else:
        label = (f"{row['module']}." if row["module"] else "") + str(row["qualname"])
    if row.get("globals"):
        label += " [globals: " + ", ".join(row["globals"]) + "]"
    return label
