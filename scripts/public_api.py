#!/usr/bin/env python3
"""List a crate's public API from rustdoc's JSON output, one item per line, sorted.

Usage: public_api.py <crate.json> [--stats]

Called by scripts/public-api (which builds the JSON); stdlib only. Each line is
`<kind> <path>[: <signature>]`: every public item reachable from the crate root (through
public modules and `pub use` re-exports, each path it can be named by), the public fields and
variants of its types, the methods of its inherent impls, the traits it implements (auto
traits included, blanket impls such as `From<T> for T` left out) and the items of its traits.
Items rustdoc strips (`#[doc(hidden)]`, private) are not listed: they are not the surface.
"""

import json
import sys

data = json.load(open(sys.argv[1]))
index = data["index"]
paths = data["paths"]
CRATE = index[str(data["root"])]["name"]
out = set()
# The shortest public path of each local item (filled by a first walk), used to name types in
# signatures so that moving a private module does not change the list.
pub_path = {}
recording = True
# Unique public items (by id) per kind, for --stats.
seen = {}
# Auto traits listed for every type (a removed `Send` is a breaking change); others that newer
# compilers add (`Freeze`, `UnsafeUnpin`) and derive markers are left out so the list is the
# same on every toolchain.
AUTO = {"Send", "Sync", "Unpin", "UnwindSafe", "RefUnwindSafe"}
SKIP_TRAITS = {"StructuralPartialEq", "Freeze", "UnsafeUnpin"}


def kind_of(item):
    return next(iter(item["inner"]))


def path_of(id_, fallback):
    """The canonical path of an item (local or external), else the path as written."""
    if id_ is not None and str(id_) in pub_path:
        return pub_path[str(id_)]
    p = paths.get(str(id_)) if id_ is not None else None
    if p and p.get("crate_id", 0) != 0:
        # Another crate's item: its crate and name (`core::Option`, `tokio::TcpStream`), not
        # its private module path, which moves between compiler and dependency versions.
        return p["path"][0] if len(p["path"]) == 1 else p["path"][0] + "::" + p["path"][-1]
    return "::".join(p["path"]) if p else fallback


def ty(t):
    """Render a rustdoc JSON type (best effort, stable for a given input)."""
    if t is None:
        return "()"
    if isinstance(t, str):
        return t
    (k, v), = t.items()
    if k == "resolved_path":
        return path_of(v.get("id"), v.get("path", v.get("name", "?"))) + args(v.get("args"))
    if k == "generic":
        return v
    if k == "primitive":
        return v
    if k == "tuple":
        return "(" + ", ".join(ty(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if k == "slice":
        return "[" + ty(v) + "]"
    if k == "array":
        return "[" + ty(v["type"]) + "; " + str(v["len"]) + "]"
    if k == "borrowed_ref":
        lt = (v["lifetime"] + " ") if v.get("lifetime") else ""
        return "&" + lt + ("mut " if v.get("is_mutable", v.get("mutable")) else "") + ty(v["type"])
    if k == "raw_pointer":
        return ("*mut " if v.get("is_mutable", v.get("mutable")) else "*const ") + ty(v["type"])
    if k == "impl_trait":
        return "impl " + " + ".join(bound(b) for b in v)
    if k == "dyn_trait":
        parts = [poly(p) for p in v["traits"]]
        if v.get("lifetime"):
            parts.append(v["lifetime"])
        return "dyn " + " + ".join(parts)
    if k == "qualified_path":
        tr = v.get("trait")
        base = ty(v["self_type"])
        if tr:
            base = "<" + base + " as " + path_of(tr.get("id"), tr.get("path", "?")) + args(tr.get("args")) + ">"
        return base + "::" + v["name"] + args(v.get("args"))
    if k == "function_pointer":
        sig = v.get("sig") or v.get("decl")
        return "fn(" + ", ".join(ty(x[1]) for x in sig["inputs"]) + ")" + ret(sig.get("output"))
    if k == "infer":
        return "_"
    return k


def args(a):
    if not a:
        return ""
    if isinstance(a, str):
        return "(..)"
    if "angle_bracketed" in a:
        ab = a["angle_bracketed"]
        parts = []
        for g in ab.get("args", []):
            if isinstance(g, str):
                parts.append("_")
            elif "type" in g:
                parts.append(ty(g["type"]))
            elif "lifetime" in g:
                parts.append(g["lifetime"])
            elif "const" in g:
                c = g["const"]
                parts.append(c.get("expr") or c.get("value") or "?")
        for c in ab.get("constraints", ab.get("bindings", [])):
            b = c.get("binding", {})
            if "equality" in b:
                e = b["equality"]
                parts.append(c["name"] + " = " + (ty(e["type"]) if "type" in e else str(e)))
            else:
                parts.append(c["name"] + ": " + " + ".join(bound(x) for x in b.get("constraint", [])))
        return "<" + ", ".join(parts) + ">" if parts else ""
    if "parenthesized" in a:
        p = a["parenthesized"]
        return "(" + ", ".join(ty(x) for x in p["inputs"]) + ")" + ret(p.get("output"))
    return ""


def poly(p):
    tr = p["trait"]
    return path_of(tr.get("id"), tr.get("path", "?")) + args(tr.get("args"))


def bound(b):
    if isinstance(b, str):
        return b
    (k, v), = b.items()
    if k == "trait_bound":
        m = {"maybe": "?", "maybe_const": "~const "}.get(v.get("modifier"), "")
        tr = v["trait"]
        return m + path_of(tr.get("id"), tr.get("path", "?")) + args(tr.get("args"))
    if k == "outlives":
        return v
    return k


def ret(o):
    return "" if o is None else " -> " + ty(o)


def generics(g):
    params = []
    for p in g.get("params", []):
        (k, v), = p["kind"].items()
        if k == "lifetime":
            params.append(p["name"])
        elif k == "type":
            if v.get("is_synthetic", v.get("synthetic")):
                continue
            bs = v.get("bounds", [])
            params.append(p["name"] + (": " + " + ".join(bound(b) for b in bs) if bs else ""))
        elif k == "const":
            params.append("const " + p["name"] + ": " + ty(v["type"]))
    where = []
    for w in g.get("where_predicates", []):
        (k, v), = w.items()
        if k == "bound_predicate":
            where.append(ty(v["type"]) + ": " + " + ".join(bound(b) for b in v["bounds"]))
        elif k == "eq_predicate":
            where.append(ty(v["lhs"]) + " == " + ty(v["rhs"].get("type", v["rhs"])))
    return ("<" + ", ".join(params) + ">" if params else ""), (" where " + ", ".join(where) if where else "")


def fn_sig(name, f):
    sig = f.get("sig") or f.get("decl")
    h = f.get("header", {})
    quals = "".join(q for q, on in (("const ", h.get("is_const", h.get("const"))),
                                    ("async ", h.get("is_async", h.get("async"))),
                                    ("unsafe ", h.get("is_unsafe", h.get("unsafe")))) if on)
    gp, wh = generics(f.get("generics", {}))
    ins = []
    for n, t in sig["inputs"]:
        if n == "self":
            r = ty(t)
            ins.append({"Self": "self", "&Self": "&self", "&mut Self": "&mut self"}.get(r, "self: " + r))
        else:
            ins.append(n + ": " + ty(t))
    return quals + "fn " + name + gp + "(" + ", ".join(ins) + ")" + ret(sig.get("output")) + wh


def emit(kind, path, rest=""):
    if recording:
        return
    out.add(kind + " " + path + rest)


def member(item, owner):
    """An associated item (of an inherent impl or a trait)."""
    k = kind_of(item)
    v = item["inner"][k]
    name = item["name"]
    if k == "function":
        emit("fn", owner + "::" + name, ": " + fn_sig(name, v))
    elif k == "assoc_const":
        emit("const", owner + "::" + name, ": " + ty(v.get("type")))
    elif k == "constant":
        emit("const", owner + "::" + name, ": " + ty(v.get("type")))
    elif k == "assoc_type":
        bs = v.get("bounds", [])
        emit("type", owner + "::" + name, (": " + " + ".join(bound(b) for b in bs)) if bs else "")
    else:
        emit(k, owner + "::" + name)


def impls(impl_ids, owner):
    for iid in impl_ids:
        imp = index.get(str(iid))
        if imp is None:
            continue
        v = imp["inner"]["impl"]
        if v.get("blanket_impl") is not None:
            continue
        gp, wh = generics(v.get("generics", {}))
        tr = v.get("trait")
        if tr is not None:
            tname = tr.get("path", "?").split("::")[-1]
            if tname in SKIP_TRAITS or (v.get("is_synthetic", v.get("synthetic")) and tname not in AUTO):
                continue
        if tr is None:
            for mid in v["items"]:
                m = index.get(str(mid))
                if m is not None and m["visibility"] == "public":
                    if not recording:
                        seen.setdefault("method", set()).add(str(mid))
                    member(m, owner)
        else:
            neg = "!" if v.get("is_negative", v.get("negative")) else ""
            emit("impl", owner, ": impl" + gp + " " + neg + path_of(tr.get("id"), tr.get("path", "?"))
                 + args(tr.get("args")) + " for " + ty(v["for"]) + wh)


def visit(item, path, stack):
    k = kind_of(item)
    v = item["inner"][k]
    key = str(item["id"])
    if recording:
        old = pub_path.get(key)
        if old is None or (len(path), path) < (len(old), old):
            pub_path[key] = path
    else:
        seen.setdefault(k, set()).add(key)
    if k == "module":
        emit("mod", path)
        if item["id"] in stack:
            return
        for cid in v["items"]:
            child = index.get(str(cid))
            if child is not None:
                visit_child(child, path, stack + (item["id"],))
    elif k == "struct":
        gp, wh = generics(v.get("generics", {}))
        emit("struct", path, gp + wh if gp or wh else "")
        kind = v.get("kind", {})
        if isinstance(kind, dict):
            fields = kind.get("plain", {}).get("fields", []) if "plain" in kind else [
                f for f in kind.get("tuple", []) if f is not None]
            for fid in fields:
                f = index.get(str(fid))
                if f is not None and f["visibility"] == "public":
                    emit("field", path + "::" + f["name"], ": " + ty(f["inner"]["struct_field"]))
            if "plain" in kind and kind["plain"].get("has_stripped_fields"):
                emit("field", path + "::..", "")
        for a in item["attrs"]:
            if "non_exhaustive" in json.dumps(a):
                emit("attr", path, ": #[non_exhaustive]")
        impls(v.get("impls", []), path)
    elif k == "enum":
        gp, wh = generics(v.get("generics", {}))
        emit("enum", path, gp + wh if gp or wh else "")
        for a in item["attrs"]:
            if "non_exhaustive" in json.dumps(a):
                emit("attr", path, ": #[non_exhaustive]")
        for vid in v["variants"]:
            var = index[str(vid)]
            vk = var["inner"]["variant"]["kind"]
            shape = ""
            if isinstance(vk, dict) and "tuple" in vk:
                shape = "(" + ", ".join(ty(index[str(f)]["inner"]["struct_field"]) if f is not None else "_"
                                        for f in vk["tuple"]) + ")"
            elif isinstance(vk, dict) and "struct" in vk:
                fs = [index[str(f)] for f in vk["struct"]["fields"]]
                shape = " { " + ", ".join(f["name"] + ": " + ty(f["inner"]["struct_field"]) for f in fs) + " }"
            emit("variant", path + "::" + var["name"], shape)
            for a in var["attrs"]:
                if "non_exhaustive" in json.dumps(a):
                    emit("attr", path + "::" + var["name"], ": #[non_exhaustive]")
        impls(v.get("impls", []), path)
    elif k == "union":
        emit("union", path)
        impls(v.get("impls", []), path)
    elif k == "trait":
        gp, wh = generics(v.get("generics", {}))
        bs = v.get("bounds", [])
        emit("trait", path, gp + (": " + " + ".join(bound(b) for b in bs) if bs else "") + wh)
        for mid in v["items"]:
            member(index[str(mid)], path)
    elif k == "function":
        emit("fn", path, ": " + fn_sig(item["name"], v))
    elif k == "constant":
        emit("const", path, ": " + ty(v.get("type")))
    elif k == "static":
        emit("static", path, ": " + ty(v.get("type")))
    elif k == "type_alias":
        gp, _ = generics(v.get("generics", {}))
        emit("type", path, gp + " = " + ty(v.get("type")))
    elif k in ("macro", "proc_macro"):
        emit("macro", path)
    else:
        emit(k, path)


def visit_child(child, base, stack):
    if child["visibility"] != "public":
        return
    k = kind_of(child)
    if k == "use":
        u = child["inner"]["use"]
        target = index.get(str(u["id"])) if u.get("id") is not None else None
        if u.get("is_glob", u.get("glob")):
            if target is not None and kind_of(target) == "module" and target["id"] not in stack:
                for cid in target["inner"]["module"]["items"]:
                    c = index.get(str(cid))
                    if c is not None:
                        visit_child(c, base, stack + (target["id"],))
            else:
                emit("use", base + "::*", " = " + u["source"])
        elif target is not None:
            visit(target, base + "::" + u["name"], stack)
        else:
            emit("use", base + "::" + u["name"], " = " + path_of(u.get("id"), u["source"]))
    else:
        visit(child, base + "::" + child["name"], stack)


visit(index[str(data["root"])], CRATE, ())
recording = False
visit(index[str(data["root"])], CRATE, ())
if "--stats" in sys.argv:
    n = {k: len(v) for k, v in seen.items()}
    types = sum(n.get(k, 0) for k in ("struct", "enum", "trait", "type_alias", "union"))
    fns = n.get("function", 0) + n.get("method", 0)
    sys.stderr.write(f"{CRATE}: {types} public types, {fns} public functions and methods "
                     f"(unique items; {n})\n")
sys.stdout.write("".join(line + "\n" for line in sorted(out)))
