"""Pretraining text: local files, Hub datasets or the built-in world, packed into fixed-length blocks.

Sources (`load_texts(source)`):
    None                    the built-in world (llada.data.world), train/validation splits
    task:NAME[:knob=v,...]  a built-in reasoning task (llada.tasks), "37+45=82" a document
    file.txt                one document per paragraph (blank-line separated)
    file.jsonl / file.json  one record per line / a JSON list, text in `text_field`
    file.parquet            a column `text_field`
    a directory or glob     every file of one of the kinds above
    name or name:config     a Hugging Face Hub dataset (streamed when `streaming=True`)

Packing concatenates tokenised documents with EOS between them and cuts the stream into
`seq_len` blocks, as LLaDA's pretraining does; the tail of each mapped batch of documents that
does not fill a block is dropped (at most seq_len - 1 tokens per 1,000 documents). The tokenizer
sees at most max(seq_len, 1024) tokens' worth of characters a call (`tokenize_bounded`): a long
document is cut into pieces where a run of whitespace starts, so one huge line costs memory by
seq_len, not by its size.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from llada.data.world import WorldConfig
from llada.errors import DataError
from llada.tasks.sources import is_source, source_texts

_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_PIECE_TOKENS = 1024  # the least a tokenizer call covers: fewer, larger calls for a short seq_len
_RUN_START = re.compile(r"\S\s")  # a character, then the whitespace a GPT-2-style pre-tokenizer splits before
_TOO_DEEP = "JSON nested too deeply to read (lists or objects inside one another past Python's recursion limit)"


def _local_files(source: str) -> list[Path] | None:
    """The files behind a local source, or None when `source` names no local path."""
    p = Path(source).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in _BUILDERS and f.is_file())
        if not files:
            raise DataError(f"{p}: no .txt, .jsonl, .json or .parquet files in this directory")
        return files
    if any(ch in source for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(f"{source}: the pattern matches no files")
        return files
    if source.startswith((".", "/", "~")) or Path(source).suffix in _BUILDERS:
        raise DataError(f"{source}: no such file or directory")
    return None


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read as UTF-8; a byte that is not UTF-8 is reported with its place."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "re-save the file as UTF-8") from None


def _check_record(record: Any, where: str, fields: tuple[str, ...], any_of: bool,
                  check: Callable[[dict, str], Any] | None) -> None:
    """Refuse a record without the fields (or, with `check`, one that `check` refuses), naming `where`."""
    present = [k for k in fields if isinstance(record, dict) and k in record]
    if (not present) if any_of else len(present) < len(fields):
        want = " or ".join(fields) if any_of else ", ".join(fields)
        raise DataError(f"{where}: the record has no {want!r} field "
                        f"(it has: {', '.join(record) if isinstance(record, dict) else type(record).__name__})")
    if check is not None:
        check(record, where)


def _check_file(path: Path, fields: tuple[str, ...], any_of: bool = False,
                check: Callable[[dict, str], Any] | None = None) -> None:
    """Report the first line that is not UTF-8, not JSON, or not a usable record, with file and line number.

    .txt files are checked for UTF-8 only; a .json file holding one JSON list is checked record by record.
    """
    if path.suffix == ".parquet":
        return
    if path.suffix == ".txt":
        for _ in _decoded_lines(path):
            pass
        return
    if path.suffix == ".json" and _check_json_list(path, fields, any_of, check):
        return
    for n, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise DataError(f"{path}:{n}: {_TOO_DEEP}") from None
        _check_record(record, f"{path}:{n}", fields, any_of, check)


def _check_json_list(path: Path, fields: tuple[str, ...], any_of: bool,
                     check: Callable[[dict, str], Any] | None) -> bool:
    """Check a .json file that holds one JSON list; False when it holds JSON lines instead."""
    text = "".join(line for _, line in _decoded_lines(path))
    if not text.lstrip().startswith("["):
        return False
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: {_TOO_DEEP}") from None
    for i, record in enumerate(records):
        _check_record(record, f"{path}: record {i + 1}", fields, any_of, check)
    return True


def _check_text_field(record: dict, where: str, field: str = "text") -> None:
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: {field!r} must be a string, got {type(value).__name__} {json.dumps(value)[:40]}")


def load_local(files: list[Path], columns: tuple[str, ...], any_of: bool = False,
               check: Callable[[dict, str], Any] | None = None) -> Any:
    """A `datasets.Dataset` from local files of one kind, checked for empty files, encoding and fields
    (and each JSON record by `check(record, "file:line")`, which raises DataError)."""
    import datasets

    kinds = {f.suffix for f in files}
    bad = kinds - set(_BUILDERS)
    if bad:
        raise DataError(f"unsupported file type {', '.join(sorted(bad))}; use .txt, .jsonl, .json or .parquet")
    if len({_BUILDERS[k] for k in kinds}) > 1:
        raise DataError(f"mixed file types ({', '.join(sorted(kinds))}); use one kind per data source")
    for f in files:
        if f.stat().st_size == 0:
            raise DataError(f"{f}: the file is empty")
        _check_file(f, columns, any_of, check)
    builder = _BUILDERS[files[0].suffix]
    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as e:  # noqa: BLE001 - what the checks above cannot see (types that differ between records)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{files[0] if len(files) == 1 else ', '.join(map(str, files))}: could not be read "
                        f"as {builder} ({type(e).__name__}: {first})") from None
    if builder != "text":
        missing = [c for c in columns if c not in ds.column_names]
        if (len(missing) == len(columns)) if any_of else missing:
            raise DataError(f"{files[0]}: no column {' or '.join(missing)!r} (columns: {', '.join(ds.column_names)})")
    if len(ds) == 0:
        raise DataError(f"{files[0]}: no records")
    return ds


def load_texts(source: str | None = None, *, split: str = "train", text_field: str = "text",
               streaming: bool = False, eval_fraction: float = 0.02, seed: int = 0,
               world: WorldConfig | None = None) -> Any:
    """A dataset with a `text` column for `split` ("train" or "validation").

    Local files hold one split: `eval_fraction` of their documents (at least one) is held out
    for "validation", deterministically by `seed`. `world` sizes the built-in world (source None).
    """
    import datasets

    if split not in ("train", "validation"):
        raise DataError(f"split must be 'train' or 'validation', got {split!r}")
    if source is None:
        from llada.data.world import World

        return datasets.Dataset.from_dict({"text": World(seed, world).pretrain_documents(split)})
    if is_source(source):  # a built-in task: one problem and its answer a document; no test problem
        return datasets.Dataset.from_dict({"text": source_texts(source, split, seed)})
    files = _local_files(source)
    if files is not None:
        ds = load_local(files, (text_field,), check=lambda r, where: _check_text_field(r, where, text_field))
        _check_string_column(ds, text_field, files[0])
        if text_field != "text":
            ds = ds.rename_column(text_field, "text")
        ds = ds.select_columns(["text"]).filter(lambda r: bool(r["text"] and r["text"].strip()))
        if len(ds) < 2:
            raise DataError(f"{source}: at least two documents are needed (one is held out for evaluation)")
        n_eval = max(1, int(len(ds) * eval_fraction))
        parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
        return parts["train" if split == "train" else "test"]
    name, _, config = source.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split, streaming=streaming)
    except Exception as e:  # noqa: BLE001 - the Hub raises many types
        raise DataError(f"{source!r} is neither a local path nor a loadable Hub dataset "
                        f"({type(e).__name__}: {e})") from None
    if text_field not in (ds.column_names or [text_field]):
        raise DataError(f"{source}: no column {text_field!r} (columns: {', '.join(ds.column_names)})")
    _check_string_column(ds, text_field, source)
    return ds.rename_column(text_field, "text") if text_field != "text" else ds


def _check_string_column(ds: Any, column: str, where: Any) -> None:
    """Refuse a text column that does not hold strings (a parquet column of numbers, say)."""
    feature = (getattr(ds, "features", None) or {}).get(column)
    dtype = getattr(feature, "dtype", None)
    if feature is not None and dtype not in ("string", "large_string"):
        raise DataError(f"{where}: the {column!r} column holds {dtype or type(feature).__name__} values, not text")


def pack(tokenizer: Any, texts: Any, seq_len: int, *, add_bos: bool = True, num_proc: int | None = None) -> Any:
    """Tokenise `texts` (a dataset with a `text` column), join documents with EOS, cut into blocks.

    Returns a dataset whose `input_ids` rows all have length `seq_len`. Each document starts with
    BOS (when `add_bos` and the tokenizer has one) and ends with EOS.
    """
    if seq_len < 2:
        raise DataError(f"seq_len must be at least 2, got {seq_len}")
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id if add_bos else None
    call_chars = max(seq_len, _PIECE_TOKENS) * chars_per_token(tokenizer)

    def chunk(batch: dict[str, list]) -> dict[str, list]:
        stream: list[int] = []
        for ids in tokenize_bounded(tokenizer, batch["text"], call_chars):
            stream.extend([bos] if bos is not None else [])
            stream.extend(ids)
            stream.append(eos)
        n = len(stream) // seq_len
        return {"input_ids": [stream[i * seq_len:(i + 1) * seq_len] for i in range(n)]}

    import datasets

    kwargs = {"num_proc": num_proc} if num_proc and not _is_iterable(texts) else {}
    # the features are given so that a corpus too short for one row packs to zero rows, not to no column
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int64"))})
    return texts.map(chunk, batched=True, batch_size=1000, remove_columns=texts.column_names, features=features,
                     **kwargs)


def chars_per_token(tokenizer: Any) -> int:
    """The most characters one token can stand for: the length of the longest vocabulary entry (a
    byte-level entry has one character per byte, so at least as many as the text it decodes to)."""
    return max(map(len, tokenizer.get_vocab()), default=1)


def pieces(text: str, size: int) -> Iterator[str]:
    """`text` in consecutive pieces of at most `size` characters, each cut where a run of whitespace
    starts (a byte-level BPE's pre-tokenizer splits there anyway, so the pieces tokenize to the ids
    of the whole), or after `size` characters where no run starts."""
    start = 0
    while len(text) - start > size:
        cut = start + size
        for found in _RUN_START.finditer(text, start, start + size + 1):
            cut = found.start() + 1
        yield text[start:cut]
        start = cut
    yield text[start:]


def tokenize_bounded(tokenizer: Any, texts: Iterable[str], size: int) -> list[list[int]]:
    """The ids of each of `texts` (no special tokens), tokenized in calls of at most `size`
    characters in all (`pieces` of a longer text), so that the tokenizer's working memory, many
    times the text it is given, is bounded whatever one text's length."""
    out: list[list[int]] = []
    group: list[str] = []
    owners: list[int] = []
    held = 0
    for k, text in enumerate(texts):
        out.append([])
        for piece in pieces(text, size):
            if group and held + len(piece) > size:
                _tokenize_into(out, tokenizer, group, owners)
                group, owners, held = [], [], 0
            group.append(piece)
            owners.append(k)
            held += len(piece)
    if group:
        _tokenize_into(out, tokenizer, group, owners)
    return out


def _tokenize_into(out: list[list[int]], tokenizer: Any, group: list[str], owners: list[int]) -> None:
    """Tokenize texts `group` in one call, adding the ids of text j to out[owners[j]]."""
    for owner, ids in zip(owners, tokenizer(group, add_special_tokens=False)["input_ids"], strict=True):
        out[owner] += ids


def _is_iterable(ds: Any) -> bool:
    import datasets

    return isinstance(ds, datasets.IterableDataset)
