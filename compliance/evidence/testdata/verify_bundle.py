#!/usr/bin/python3
"""An independent verifier of tunnelplane evidence bundles, written from docs/event-format.md.

Standard library only, plus python3-cryptography (Ed25519) and the zstd command (to decompress).
Usage: verify_bundle.py BUNDLE [--trusted-checkpoint FILE]
Prints one JSON object per problem ({"position": N or null, "kind": ..., "detail": ...}) and exits
0 intact, 1 damaged, 2 could not run.
"""
import base64
import hashlib
import io
import json
import struct
import subprocess
import sys
import tarfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FILES = ["manifest.json", "manifest.sig", "records.bin", "keyhistory.bin", "leaves.bin",
         "checkpoint-window", "checkpoint-newest", "consistency.bin"]
HASHED = FILES[2:]
problems = []


def problem(pos, kind, detail):
    problems.append({"position": pos, "kind": kind, "detail": detail})


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def leaf_hash(b):
    return sha256(b"\x00", b)


def node_hash(l, r):
    return sha256(b"\x01", l, r)


def mth(leaves):
    """RFC 6962 Merkle tree hash of a list of leaf hashes."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def root_from_inclusion(index, size, lh, path):
    """RFC 9162 2.1.3.2; None when the proof does not fit."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, lh
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_consistency(size1, size2, proof, root1, root2):
    """RFC 9162 2.1.4.2."""
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0 or size1 > size2:
        return False
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the first node
        proof = [root1] + proof
    if not proof:
        return False
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def ed25519_ok(pub, msg, sig):
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


class Reader:
    def __init__(self, b):
        self.b, self.off = b, 0

    def take(self, n):
        if n > len(self.b) - self.off:
            raise ValueError("truncated")
        out = self.b[self.off:self.off + n]
        self.off += n
        return out

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def lp(self):
        return self.take(self.u32())

    def end(self):
        if self.off != len(self.b):
            raise ValueError("trailing bytes")


def decode_leaf(b):
    r = Reader(b)
    if r.take(4) != b"TPL1":
        raise ValueError("not a leaf")
    leaf = {"position": r.u64(), "stream_version": r.u64(), "recorded_at": struct.unpack(">q", r.take(8))[0],
            "envelope": r.lp(), "signature": r.lp(), "proof": r.lp()}
    r.end()
    e = Reader(leaf["envelope"])
    if e.take(4) != b"TPE1":
        raise ValueError("not an envelope")
    leaf["event_id"] = e.take(16)
    leaf["stream_id"] = e.lp().decode()
    leaf["type"] = e.lp().decode()
    leaf["schema_version"] = e.u32()
    leaf["key_id"] = e.lp().decode()
    leaf["payload"] = e.lp()
    leaf["metadata"] = e.lp()
    e.end()
    return leaf


def decode_entries(b, in_window):
    r, out = Reader(b), []
    while r.off < len(b):
        try:
            lb = r.lp()
            prev, h = r.take(32), r.take(32)
            path = [r.take(32) for _ in range(r.u32())]
        except ValueError as err:
            problem(None, "malformed", "entry after %d: %s" % (len(out), err))
            break
        try:
            leaf = decode_leaf(lb)
        except (ValueError, UnicodeDecodeError) as err:
            problem(None, "malformed", str(err))
            continue
        out.append({"leaf_bytes": lb, "prev": prev, "hash": h, "path": path, "leaf": leaf, "in_window": in_window})
    return out


def key_id(pub):
    return "ed25519:" + hashlib.sha256(pub).digest()[:8].hex()


def key_message(tag, origin, *parts):
    msg = tag.encode() + b"\x00" + struct.pack(">I", len(origin)) + origin.encode()
    for p in parts:
        msg += struct.pack(">I", len(p)) + p
    return msg


INF = 2 ** 64


class Ring:
    """The key history: key id -> dict(pub, purpose, owner, from, until)."""

    def __init__(self):
        self.origin, self.log_key, self.keys = "", None, {}

    def copy(self):
        c = Ring()
        c.origin, c.log_key = self.origin, self.log_key
        c.keys = {k: dict(v) for k, v in self.keys.items()}
        return c

    def apply(self, pos, typ, payload):
        p = json.loads(payload)
        n = self.copy()
        if typ == "log.genesis":
            pub = base64.b64decode(p["public_key"])
            if pos != 0 or self.origin or p.get("algorithm") != "ed25519" or not p.get("origin") or key_id(pub) != p["key_id"]:
                raise ValueError("invalid genesis")
            n.origin, n.log_key = p["origin"], p["key_id"]
            n.keys[p["key_id"]] = {"pub": pub, "purpose": "log", "owner": "", "from": 0, "until": INF}
        elif typ == "log.key_rotated":
            old = n.keys.get(p["old_key_id"])
            owner = p.get("owner", "")
            if not old or old["until"] != INF or old["purpose"] != p["purpose"] or old["owner"] != owner:
                raise ValueError("rotation of a key not in force")
            pub = base64.b64decode(p["public_key"])
            if key_id(pub) != p["new_key_id"] or p["new_key_id"] in n.keys:
                raise ValueError("rotation: bad new key")
            msg = key_message("tunnelplane/key-rotation/v1", self.origin, p["purpose"].encode(), p["old_key_id"].encode(),
                              p["new_key_id"].encode(), pub)
            if not ed25519_ok(old["pub"], msg, base64.b64decode(p["old_key_signature"])) or \
                    not ed25519_ok(pub, msg, base64.b64decode(p["new_key_signature"])):
                raise ValueError("rotation: a cross-signature is invalid")
            old["until"] = pos + 1
            n.keys[p["new_key_id"]] = {"pub": pub, "purpose": p["purpose"], "owner": owner, "from": pos + 1, "until": INF}
            if p["purpose"] == "log":
                n.log_key = p["new_key_id"]
        elif typ == "log.key_added":
            pub = base64.b64decode(p["public_key"])
            owner = p.get("owner", "")
            if p["purpose"] not in ("node", "token") or key_id(pub) != p["key_id"] or p["key_id"] in n.keys:
                raise ValueError("key added: invalid")
            msg = key_message("tunnelplane/key-added/v1", self.origin, p["purpose"].encode(), owner.encode(), p["key_id"].encode(), pub)
            if not ed25519_ok(pub, msg, base64.b64decode(p["proof"])):
                raise ValueError("key added: proof of possession is invalid")
            n.keys[p["key_id"]] = {"pub": pub, "purpose": p["purpose"], "owner": owner, "from": pos + 1, "until": INF}
        elif typ == "log.key_revoked":
            k = n.keys.get(p["key_id"])
            if not k or k["until"] != INF or k["purpose"] == "log":
                raise ValueError("key revoked: not a revocable key in force")
            k["until"] = pos + 1
        else:
            raise ValueError("unknown log event type " + typ)
        return n


def note_key_hash(name, pub):
    return sha256(name.encode(), b"\n", b"\x01", pub)[:4]


def open_checkpoint(text, origin, pub):
    """Returns (size, root) when the note is signed by pub under origin, else None."""
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        return None
    body += "\n"
    lines = body.split("\n")
    if len(lines) < 4 or lines[0] != origin:
        return None
    for line in sigs.split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != origin:
            continue
        raw = base64.b64decode(parts[2])
        if raw[:4] == note_key_hash(origin, pub) and ed25519_ok(pub, body.encode(), raw[4:]):
            return int(lines[1]), base64.b64decode(lines[2])
    return None


def main():
    args = sys.argv[1:]
    trusted = None
    if "--trusted-checkpoint" in args:
        i = args.index("--trusted-checkpoint")
        trusted = open(args[i + 1]).read()
        del args[i:i + 2]
    try:
        raw = subprocess.run(["zstd", "-dc", args[0]], check=True, capture_output=True).stdout
        files = {}
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            for m in tf.getmembers():
                files[m.name] = tf.extractfile(m).read()
    except (OSError, subprocess.CalledProcessError, tarfile.TarError) as err:
        print(json.dumps({"position": None, "kind": "unreadable", "detail": str(err)}))
        return 2
    for name in FILES:
        if name not in files:
            problem(None, "missing_file", name)
    if problems:
        return report()
    m = json.loads(files["manifest.json"])
    for name in HASHED:
        if hashlib.sha256(files[name]).hexdigest() != m["files"].get(name):
            problem(None, "file_hash_mismatch", name)
    frm, to, W, N = m["from"], m["to"], m["window_checkpoint"], m["newest_checkpoint"]
    lv = files["leaves.bin"]
    if len(lv) != 32 * N:
        problem(None, "bad_size", "leaves.bin")
        return report()
    leaves = [lv[i:i + 32] for i in range(0, len(lv), 32)]
    recs = decode_entries(files["keyhistory.bin"], False) + decode_entries(files["records.bin"], True)
    recs.sort(key=lambda r: r["leaf"]["position"])

    # Coverage: every window position once, but those withheld (other organizations' records in
    # a scoped bundle: only their leaf hashes travel).
    withheld = set()
    for rg in m.get("withheld") or []:
        withheld.update(range(max(rg["from"], frm), min(rg["to"], to) + 1))
    want, seen = frm, set()
    for r in recs:
        pos = r["leaf"]["position"]
        if pos in seen:
            problem(pos, "duplicate", "two records")
            continue
        seen.add(pos)
        if pos >= N:
            problem(pos, "past_checkpoint", "")
            continue
        if not r["in_window"]:
            if r["leaf"]["stream_id"] != "$log" or frm <= pos <= to:
                problem(pos, "not_key_history", "")
            continue
        if pos < frm or pos > to:
            problem(pos, "outside_window", "")
            continue
        if pos in withheld:
            problem(pos, "withheld_present", "")
        while want < pos:
            if want not in withheld:
                problem(want, "missing", "no record")
            want += 1
        want = pos + 1
    while want <= to:
        if want not in withheld:
            problem(want, "missing", "no record")
        want += 1

    # Records in position order.
    ring, prev, log_version = Ring(), None, 0
    rings = []  # (position, ring after it)
    for r in recs:
        leaf, pos = r["leaf"], r["leaf"]["position"]
        lb = r["leaf_bytes"]
        if sha256(b"tunnelplane/chain/v1\x00", r["prev"], struct.pack(">I", len(lb)), lb) != r["hash"]:
            problem(pos, "hash_mismatch", "the record's bytes do not hash to its hash")
        if pos == 0 and r["prev"] != bytes(32):
            problem(0, "chain_break", "first prev_hash")
        if r["in_window"] and prev and prev["in_window"] and prev["leaf"]["position"] + 1 == pos and r["prev"] != prev["hash"]:
            problem(pos, "chain_break", "prev_hash")
        if pos < len(leaves) and leaf_hash(lb) != leaves[pos]:
            problem(pos, "leaf_mismatch", "")
        signing = after = ring
        if leaf["stream_id"] == "$log":
            log_version += 1
            if leaf["stream_version"] != log_version:
                problem(pos, "stream_version", "a key record is left out")
                log_version = leaf["stream_version"]
            try:
                nxt = ring.apply(pos, leaf["type"], leaf["payload"])
                after = nxt
                if pos == 0:
                    signing = nxt
                rings.append((pos, nxt))
            except (ValueError, KeyError, json.JSONDecodeError) as err:
                problem(pos, "invalid_key_event", str(err))
        check_signature(leaf, pos, signing)
        ring, prev = after, r
    if not rings:
        problem(0, "no_genesis", "")
        return report()

    def ring_at(size):
        out = rings[0][1]
        for p, rg in rings:
            if p < size:
                out = rg
        return out

    def checkpoint(name, size):
        rg = ring_at(size)
        got = open_checkpoint(files[name].decode(), m["origin"], rg.keys[rg.log_key]["pub"])
        if got is None:
            problem(None, "checkpoint_bad_signature", name)
            return None
        if got[0] != size or got[1] != mth(leaves[:size]):
            problem(None, "checkpoint_mismatch", name)
            return None
        return got[1]

    root_w, root_n = checkpoint("checkpoint-window", W), checkpoint("checkpoint-newest", N)
    for r in recs:
        pos, size, root = r["leaf"]["position"], (W if r["in_window"] else N), (root_w if r["in_window"] else root_n)
        if root is not None and root_from_inclusion(pos, size, leaf_hash(r["leaf_bytes"]), r["path"]) != root:
            problem(pos, "bad_inclusion_proof", "")
    c = files["consistency.bin"]
    if root_w is not None and root_n is not None:
        if len(c) % 32 or not verify_consistency(W, N, [c[i:i + 32] for i in range(0, len(c), 32)], root_w, root_n):
            problem(None, "bad_consistency_proof", "")
    rg = ring_at(N)
    sig = json.loads(files["manifest.sig"])
    if sig["key_id"] != rg.log_key or not ed25519_ok(rg.keys[rg.log_key]["pub"], b"tunnelplane/evidence-manifest/v1\x00" + files["manifest.json"],
                                                     base64.b64decode(sig["signature"])):
        problem(None, "manifest_bad_signature", "")
    if trusted is not None:
        got = None
        for k in ring.keys.values():
            if k["purpose"] == "log":
                got = got or open_checkpoint(trusted, m["origin"], k["pub"])
        if got is None:
            problem(None, "checkpoint_bad_signature", "trusted checkpoint")
        elif got[0] > N:
            problem(N, "rolled_back", "the trusted checkpoint vouches for %d records, the bundle's log holds %d" % (got[0], N))
        elif mth(leaves[:got[0]]) != got[1]:
            problem(None, "rewritten", "the first %d records do not hash to the trusted root" % got[0])
    return report()


def check_signature(leaf, pos, ring):
    k = ring.keys.get(leaf["key_id"])
    if not k or not ring.origin or k["purpose"] not in ("log", "node"):
        problem(pos, "unknown_key", leaf["key_id"])
        return
    if not k["from"] <= pos < k["until"]:
        problem(pos, "key_not_in_force", leaf["key_id"])
        return
    if k["purpose"] != "log" and leaf["stream_id"] != "nodefacts-" + k["owner"]:
        problem(pos, "bad_signature", "a node key outside its stream")
        return
    try:
        p = Reader(leaf["proof"])
        index, count, n = p.u32(), p.u32(), p.u32()
        path = [p.take(32) for _ in range(n)]
        p.end()
    except ValueError:
        problem(pos, "bad_signature", "malformed proof")
        return
    root = root_from_inclusion(index, count, leaf_hash(leaf["envelope"]), path)
    if root is None:
        problem(pos, "bad_signature", "malformed proof")
        return
    msg = b"tunnelplane/event-signature/v1\x00" + struct.pack(">I", count) + root
    if not ed25519_ok(k["pub"], msg, leaf["signature"]):
        problem(pos, "bad_signature", "the signature does not verify")


def report():
    for p in problems:
        print(json.dumps(p))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
