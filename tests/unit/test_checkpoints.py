"""Signed notes, checkpoints and cosignatures against other implementations' bytes.

The vectors (tests/unit/vectors/signed_notes.json, with their provenance) are notes that Go's
sumdb/note, the C2SP spec and a live log with its witnesses produced: opening them proves
the parsing, key IDs and signed messages match; signing the Go text with the Go key must
give the Go note byte for byte (Ed25519 is deterministic). Then every byte of a note is
changed in turn, and every change must be refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from federation import merkle
from federation.checkpoints import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    NoteError,
    Verifier,
    add_signature_lines,
    cosign,
    cosignature_line,
    keep_verified,
    key_id,
    open_note,
    parse_signer_key,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_cosignature,
    vkey,
)

V = json.loads((Path(__file__).parent / "vectors" / "signed_notes.json").read_text("utf-8"))
GO = V["go_sumdb"]
SPEC = V["c2sp_spec"]
WITNESSED = V["witnessed_checkpoint"]

ORIGIN = "liaison.example/FR-DGPN/audit"
T0 = 1_790_000_000


def _key(seed: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


LOG_KEY = _key(1)
WITNESS_KEY = _key(2)
OTHER_KEY = _key(3)
LOG = Verifier.for_log(ORIGIN, LOG_KEY.public_key())
WITNESS = Verifier.for_witness("witness.example/DE-BKA", WITNESS_KEY.public_key())


def checkpoint(size: int = 3, extensions: tuple[str, ...] = ()) -> Checkpoint:
    leaves = [merkle.leaf_hash(b"entry %d" % i) for i in range(size)]
    return Checkpoint(ORIGIN, size, merkle.root(leaves), extensions)


# --- other implementations' notes ------------------------------------------------------------


def test_go_signer_key_signs_the_go_note_byte_for_byte() -> None:
    name, key = parse_signer_key(GO["signer_key"])
    assert name == "PeterNeumann"
    assert sign_note(GO["text"], name, key) == GO["text"] + "\n" + GO["peter_line"]
    assert vkey(name, key.public_key()) == GO["verifier_key"]


def test_go_note_with_two_signers_opens_with_either_or_both_keys() -> None:
    note = GO["text"] + "\n" + GO["peter_line"] + GO["enoch_line"]
    peter = Verifier.from_vkey(GO["verifier_key"])
    enoch = Verifier.from_vkey(GO["enoch_verifier_key"])
    assert open_note(note, [peter]) == (GO["text"], ("PeterNeumann",))
    assert open_note(note, [enoch]) == (GO["text"], ("EnochRoot",))
    assert open_note(note.encode(), [enoch, peter]) == (GO["text"], ("PeterNeumann", "EnochRoot"))
    with pytest.raises(NoteError, match="no known key"):
        open_note(note, [])


def test_c2sp_spec_example_opens_and_its_key_id_is_derived_as_the_spec_says() -> None:
    spec = Verifier.from_vkey(SPEC["verifier_key"])
    assert spec.public_key == bytes.fromhex(SPEC["public_key_hex"])
    assert spec.key_id == bytes.fromhex("530d903a")
    assert key_id("example.com/foo", ALG_ED25519, spec.public_key).hex() == "530d903a"
    assert spec.to_vkey() == SPEC["verifier_key"]
    assert open_note(SPEC["note"], [spec]) == (
        "This is an example message.\n",
        ("example.com/foo",),
    )


def test_a_real_witnessed_checkpoint_verifies_for_the_log_and_for_its_witness() -> None:
    log = Verifier.from_vkey(WITNESSED["log_verifier_key"])
    witness = Verifier.from_vkey(WITNESSED["witness_verifier_key"])
    assert (log.alg, witness.alg) == (ALG_ED25519, ALG_COSIGNATURE_V1)
    cp = verify_checkpoint(WITNESSED["note"], WITNESSED["origin"], log)
    assert (cp.origin, cp.size, cp.extensions) == (WITNESSED["origin"], WITNESSED["size"], ())
    assert cp.to_note_body() == WITNESSED["note"].split("\n\n")[0] + "\n"
    witnessed, when = verify_cosignature(
        WITNESSED["note"], witness, origin=WITNESSED["origin"], now=WITNESSED["witness_timestamp"]
    )
    assert witnessed == cp and when == WITNESSED["witness_timestamp"]
    # the 0x05 (RFC 6962 STH) line and the other witnesses are unknown here, so ignored
    assert open_note(WITNESSED["note"], [log, witness])[1] == (log.name, witness.name)
    with pytest.raises(NoteError, match="in the future"):
        verify_cosignature(WITNESSED["note"], witness, now=WITNESSED["witness_timestamp"] - 1)
    with pytest.raises(NoteError, match="not a witness"):
        verify_cosignature(WITNESSED["note"], log)


def test_key_ids_of_both_signature_types_match_transparency_dev_keys() -> None:
    plain = Verifier.from_vkey(V["cosignature_vkeys"]["ed25519"])  # its base64 holds a '+'
    assert plain.alg == ALG_ED25519 and plain.key_id.hex() == "7997405c"
    cosigner = Verifier.from_vkey(V["cosignature_vkeys"]["cosignature_v1"])
    assert cosigner.alg == ALG_COSIGNATURE_V1 and cosigner.key_id.hex() == "da77ade7"
    # one Ed25519 key, two types: different IDs, so neither signature passes for the other
    as_witness = Verifier(plain.name, ALG_COSIGNATURE_V1, plain.public_key)
    assert as_witness.key_id != plain.key_id


def test_go_verifier_key_manglings_are_refused() -> None:
    """Go's TestNewVerifier: every proper substring and every one-byte increment fails."""
    key = GO["verifier_key"]
    Verifier.from_vkey(key)
    for i in range(len(key) + 1):
        for j in range(i + 1, len(key) + 1):
            if (i, j) != (0, len(key)):
                with pytest.raises(NoteError):
                    Verifier.from_vkey(key[i:j])
    for i in range(len(key)):
        with pytest.raises(NoteError):
            Verifier.from_vkey(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(NoteError):
            Verifier.from_vkey(bad)


def test_go_signer_key_manglings_are_refused() -> None:
    key = GO["signer_key"]
    for i in range(len(key)):
        with pytest.raises(NoteError):
            parse_signer_key(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])
    with pytest.raises(NoteError):
        parse_signer_key(key[:-1])


def test_go_malformed_notes_are_refused() -> None:
    """Go's TestOpen "invalid encoded message syntax" cases, and a few more."""
    text, line = GO["text"], GO["peter_line"]
    peter = Verifier.from_vkey(GO["verifier_key"])
    bad = [
        text,
        text + "\n",
        text + "\n" + line[:-1],
        "\x01" + text + "\n" + line,
        text + "\n" + "\u2014 Bad Name " + line.split(" ", 2)[2],
        text + "\n" + line + "Unexpected line.\n",
        text + "\n" + line.replace("\u2014", "-"),
        text + "\n" + line.replace("=\n", "\n"),
        text + "\n" + line * (101),
    ]
    for note in bad:
        with pytest.raises(NoteError):
            open_note(note, [peter])
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(b"\xff" + (text + "\n" + line).encode(), [peter])


def test_a_known_key_that_fails_refuses_the_whole_note_and_repeats_are_ignored() -> None:
    text, line = GO["text"], GO["peter_line"]
    peter = Verifier.from_vkey(GO["verifier_key"])
    forged = line[:60] + "ABCD" + line[60:]
    with pytest.raises(NoteError, match="PeterNeumann: malformed"):
        open_note(text + "\n" + forged, [peter])
    flipped = line[:60] + ("A" if line[60] != "A" else "B") + line[61:]
    with pytest.raises(NoteError, match="PeterNeumann: signature does not verify"):
        open_note(text + "\n" + flipped, [peter])
    # Go: a second line by a key already seen is dropped, verified or not
    assert open_note(text + "\n" + line + line + forged, [peter])[1] == ("PeterNeumann",)


def test_the_same_known_key_given_twice_is_not_ambiguous() -> None:
    peter = Verifier.from_vkey(GO["verifier_key"])
    note = GO["text"] + "\n" + GO["peter_line"]
    assert open_note(note, [peter, Verifier.from_vkey(GO["verifier_key"])])[1] == ("PeterNeumann",)


# --- tampering: every byte ---------------------------------------------------------------------


def _every_byte_changed(note: bytes) -> list[bytes]:
    out = []
    for i in range(len(note)):
        for delta in (0x01, 0x20):
            out.append(note[:i] + bytes([note[i] ^ delta]) + note[i + 1 :])
    return out


def test_every_changed_byte_of_a_signed_note_is_refused() -> None:
    note = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY).encode()
    assert verify_checkpoint(note, ORIGIN, LOG) == checkpoint()
    for bad in _every_byte_changed(note):
        with pytest.raises(NoteError):
            verify_checkpoint(bad, ORIGIN, LOG)


def test_every_changed_byte_of_a_cosigned_note_is_refused_for_the_witness() -> None:
    note = cosign(sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY), WITNESS.name, WITNESS_KEY, T0)
    assert verify_cosignature(note, WITNESS, origin=ORIGIN) == (checkpoint(), T0)
    log_line = range(len(checkpoint().to_note_body()) + 1, len(note) - len(note.splitlines()[-1]))
    for i, bad in enumerate(_every_byte_changed(note.encode())):
        if i // 2 in log_line:
            continue  # the log's own line: the witness does not sign it (see the next test)
        with pytest.raises(NoteError):
            verify_cosignature(bad, WITNESS, origin=ORIGIN)


def test_the_witness_does_not_sign_the_logs_line_so_changing_it_only_fails_the_log() -> None:
    signed = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY)
    note = cosign(signed, WITNESS.name, WITNESS_KEY, T0)
    log_line = signed.splitlines(keepends=True)[-1]
    forged = note.replace(log_line, log_line[:30] + "A" + log_line[31:])
    assert forged != note
    verify_cosignature(forged, WITNESS, origin=ORIGIN)
    with pytest.raises(NoteError):
        verify_checkpoint(forged, ORIGIN, LOG)


def test_unknown_keys_are_ignored_and_a_note_without_known_keys_refused() -> None:
    note = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY)
    other = sign_checkpoint(checkpoint(), "someone.else", OTHER_KEY)
    both = add_signature_lines(note, [other.splitlines(keepends=True)[-1]])
    assert verify_checkpoint(both, ORIGIN, LOG) == checkpoint()
    with pytest.raises(NoteError, match="no known key"):
        verify_checkpoint(other, ORIGIN, LOG)
    # same name, another key (so another key ID): unknown, ignored, so no known signer
    same_name = sign_checkpoint(checkpoint(), ORIGIN, OTHER_KEY)
    with pytest.raises(NoteError, match="no known key"):
        verify_checkpoint(same_name, ORIGIN, LOG)
    # the known key under another name: unknown too
    renamed = sign_checkpoint(checkpoint(), "renamed.example", LOG_KEY)
    with pytest.raises(NoteError, match="no known key"):
        verify_checkpoint(renamed, ORIGIN, LOG)


def test_keep_verified_drops_the_lines_no_known_key_verified() -> None:
    note = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY)
    stranger = sign_checkpoint(checkpoint(), "someone.else", OTHER_KEY).splitlines(True)[-1]
    cosigned = cosign(add_signature_lines(note, [stranger]), WITNESS.name, WITNESS_KEY, T0)
    assert keep_verified(cosigned, [LOG]) == note
    assert keep_verified(cosigned, [LOG, WITNESS]) == cosign(note, WITNESS.name, WITNESS_KEY, T0)
    with pytest.raises(NoteError, match="no known key"):
        keep_verified(add_signature_lines(note, [stranger]), [WITNESS])
    forged = note.replace(ORIGIN, "liaison.example/XX-FAKE/audit", 1)
    with pytest.raises(NoteError, match="does not verify"):
        keep_verified(forged, [LOG])


def test_wrong_origin_is_refused_even_when_the_key_signed_it() -> None:
    other_log = Checkpoint("liaison.example/DE-BKA/audit", 3, checkpoint().root)
    note = sign_checkpoint(other_log, ORIGIN, LOG_KEY)
    with pytest.raises(NoteError, match=r"not 'liaison\.example/FR-DGPN/audit'"):
        verify_checkpoint(note, ORIGIN, LOG)
    cosigned = cosign(note, WITNESS.name, WITNESS_KEY, T0)
    with pytest.raises(NoteError, match="not "):
        verify_cosignature(cosigned, WITNESS, origin=ORIGIN)


def test_a_log_key_cannot_pass_for_a_witness_key_or_back() -> None:
    """One Ed25519 key, two signature types: the key IDs differ, so nothing crosses over."""
    body = checkpoint().to_note_body()
    plain = sign_note(body, WITNESS.name, WITNESS_KEY)
    with pytest.raises(NoteError, match="no known key"):
        verify_cosignature(plain, WITNESS)
    only_cosigned = body + "\n" + cosignature_line(body, ORIGIN, LOG_KEY, T0)
    with pytest.raises(NoteError, match="no known key"):
        verify_checkpoint(only_cosigned, ORIGIN, LOG)


# --- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_body_round_trips_with_extensions() -> None:
    cp = checkpoint(5, ("extension one", "ext2"))
    body = cp.to_note_body()
    lines = body.split("\n")
    assert lines[:2] == [ORIGIN, "5"] and lines[-1] == ""
    assert Checkpoint.from_note_body(body) == cp
    assert verify_checkpoint(sign_checkpoint(cp, ORIGIN, LOG_KEY), ORIGIN, LOG) == cp
    empty = Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT)
    assert empty.to_note_body() == f"{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"


@pytest.mark.parametrize(
    "body",
    [
        "",
        "origin\n",
        "origin\n3\n",
        "origin\n3\nAAAA\n",  # not 32 bytes
        "origin\n03\n{root}\n",  # leading zero
        "origin\n-3\n{root}\n",
        "origin\n+3\n{root}\n",
        "origin\n 3\n{root}\n",
        "origin\n\u0663\n{root}\n",  # an Arabic-Indic digit three
        "origin\n18446744073709551616\n{root}\n",  # 2**64
        "origin\n3\n{root}",  # no final newline
        "\n3\n{root}\n",  # empty origin
        "origin\n3\n{root}\n\n",  # empty extension line
        "origin\n3\n{bad_root}\n",  # non-canonical base64
        "origin\n3\n{root_no_pad}\n",
        "origin\n3\n{root}\x7f\n",
        "origin\n3\n{root}\r\n",
    ],
)
def test_checkpoint_parsing_is_strict(body: str) -> None:
    root = checkpoint().to_note_body().split("\n")[2]
    assert root.endswith("=")
    bad_root = root[:-2] + chr(ord(root[-2]) + 1) + "="  # same bytes, other trailing bits
    with pytest.raises(NoteError):
        Checkpoint.from_note_body(
            body.format(root=root, bad_root=bad_root, root_no_pad=root.rstrip("="))
        )


def test_checkpoint_fields_are_checked_when_made() -> None:
    root = checkpoint().root
    for args in [
        ("", 1, root),
        ("a\nb", 1, root),
        (ORIGIN, -1, root),
        (ORIGIN, 1 << 64, root),
        (ORIGIN, 1, root[:31]),
    ]:
        with pytest.raises(NoteError):
            Checkpoint(*args)
    with pytest.raises(NoteError):
        Checkpoint(ORIGIN, 1, root, ("",))
    assert Checkpoint(ORIGIN, (1 << 64) - 1, root).size == (1 << 64) - 1


# --- signing and cosigning -----------------------------------------------------------------------


def test_sign_note_refuses_bodies_and_names_outside_the_format() -> None:
    for body in ("no newline", "tab\there\n", "cr\r\n"):
        with pytest.raises(NoteError):
            sign_note(body, ORIGIN, LOG_KEY)
    for name in ("", "a b", "a+b", "tab\t", "nbsp\u00a0x"):
        with pytest.raises(NoteError):
            sign_note("text\n", name, LOG_KEY)
    # a text may hold blank lines: the last blank line separates the signatures
    note = sign_note("a\n\nb\n\n", ORIGIN, LOG_KEY)
    assert open_note(note, [LOG]) == ("a\n\nb\n\n", (ORIGIN,))


def test_cosignature_message_is_the_spec_one() -> None:
    body = checkpoint().to_note_body()
    line = cosignature_line(body, WITNESS.name, WITNESS_KEY, T0)
    assert line.startswith(f"\u2014 {WITNESS.name} ") and line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == WITNESS.key_id
    assert int.from_bytes(raw[4:12], "big") == T0
    message = f"cosignature/v1\ntime {T0}\n{body}".encode()
    WITNESS_KEY.public_key().verify(raw[12:], message)  # raises if not the spec's message


def test_cosign_adds_or_replaces_the_witness_line_and_keeps_the_log_line() -> None:
    signed = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY)
    once = cosign(signed, WITNESS.name, WITNESS_KEY, T0)
    twice = cosign(once, WITNESS.name, WITNESS_KEY, T0 + 60)
    assert len(twice.splitlines()) == len(once.splitlines())
    assert verify_cosignature(twice, WITNESS, origin=ORIGIN)[1] == T0 + 60
    assert verify_checkpoint(twice, ORIGIN, LOG) == checkpoint()
    second = Verifier.for_witness("witness.example/NL-POL", OTHER_KEY.public_key())
    three = cosign(twice, second.name, OTHER_KEY, T0 + 61)
    _, names = open_note(three, [LOG, WITNESS, second])
    assert names == (ORIGIN, WITNESS.name, second.name)


def test_cosign_refuses_what_is_not_a_checkpoint_and_out_of_range_timestamps() -> None:
    with pytest.raises(NoteError):
        cosign(sign_note("not\na checkpoint\n", ORIGIN, LOG_KEY), WITNESS.name, WITNESS_KEY, T0)
    signed = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY)
    for t in (-1, 1 << 63):
        with pytest.raises(NoteError):
            cosign(signed, WITNESS.name, WITNESS_KEY, t)
    assert verify_cosignature(cosign(signed, WITNESS.name, WITNESS_KEY, 0), WITNESS)[1] == 0


def test_a_cosignature_with_a_timestamp_beyond_2_63_is_refused() -> None:
    signed = sign_checkpoint(checkpoint(), ORIGIN, LOG_KEY)
    body = checkpoint().to_note_body()
    t = 1 << 63
    sig = WITNESS_KEY.sign(f"cosignature/v1\ntime {t}\n{body}".encode())
    line = (
        f"\u2014 {WITNESS.name} "
        + base64.b64encode(WITNESS.key_id + t.to_bytes(8, "big") + sig).decode()
    )
    with pytest.raises(NoteError, match="out of range"):
        verify_cosignature(add_signature_lines(signed, [line + "\n"]), WITNESS)


def test_cosignature_covers_extension_lines() -> None:
    cp = checkpoint(4, ("extra",))
    note = cosign(sign_checkpoint(cp, ORIGIN, LOG_KEY), WITNESS.name, WITNESS_KEY, T0)
    assert verify_cosignature(note, WITNESS)[0] == cp
    with pytest.raises(NoteError):
        verify_cosignature(note.replace("extra\n", "extrA\n"), WITNESS)


def test_verifier_keys_round_trip_and_refuse_unknown_types() -> None:
    for v in (LOG, WITNESS):
        assert Verifier.from_vkey(v.to_vkey()) == v
    assert vkey(WITNESS.name, WITNESS_KEY.public_key(), ALG_COSIGNATURE_V1) == WITNESS.to_vkey()
    with pytest.raises(NoteError, match="unsupported"):
        Verifier("x", 0x02, bytes(32))
    with pytest.raises(NoteError):
        Verifier("bad name", ALG_ED25519, bytes(32))


def test_note_errors_are_value_errors() -> None:
    assert issubclass(NoteError, ValueError)
