"""Dataset file formats: the one set of rules that the upload check (genq.datasets, in the web app) and the
training loaders (core/data, in the worker) apply, so that what uploads is what trains.

Files are typed by their first bytes, never by their names: PNG and JPEG images, 16-bit PCM WAV audio, and
zip archives (or folders) of them. Text is UTF-8 without NUL bytes. Every refusal is a DataError naming the
file or zip member and the problem. No torch here: the web app imports this module.
"""

from __future__ import annotations

import codecs
import io
import re
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from PIL import Image, UnidentifiedImageError

from genq.core.errors import DataError

CHUNK = 1 << 20
MEDIA_KINDS = {"png": "images", "jpeg": "images", "wav": "audio"}  # file type -> dataset kind
PIL_FORMATS = ("PNG", "JPEG")  # Pillow decodes these and no others, whatever a file claims to be
MAX_ZIP_MEMBERS = 200_000
MAX_IMAGES = 100_000
MAX_FILE_BYTES = {"images": 20 * 2**20, "audio": 200 * 2**20}  # one file, unpacked
MAX_AUDIO_SECONDS = 4 * 3600  # all clips together
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def magic(head: bytes) -> str | None:
    """The type of a file from its first 12 bytes: png, jpeg, wav, zip, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # an archive, or an empty one
        return "zip"
    return None


# First bytes of media files genq does not read, named in the refusal rather than taken for (bad) text; each
# long enough, or with a NUL byte, that no text file starts so.
_OTHER_FORMATS = (
    (re.compile(rb"BM.{4}\x00\x00\x00\x00", re.S), "a BMP image"), (re.compile(rb"GIF8[79]a"), "a GIF image"),
    (re.compile(rb"RIFF.{4}WEBP", re.S), "a WebP image"), (re.compile(rb"II\*\x00|MM\x00\*"), "a TIFF image"),
    (re.compile(rb"fLaC\x00"), "a FLAC file"), (re.compile(rb"OggS\x00"), "an Ogg file"),
    (re.compile(rb"ID3[\x02-\x04]\x00"), "an MP3 file"), (re.compile(rb"\x1f\x8b\x08"), "a gzip archive"),
    (re.compile(rb"7z\xbc\xaf\x27\x1c"), "a 7-Zip archive"), (re.compile(rb"%PDF-\d"), "a PDF document"))


def unsupported(head: bytes) -> str | None:
    """What a file of a format genq does not read is, from its first 12 bytes ('a GIF image'), else None."""
    return next((name for start, name in _OTHER_FORMATS if start.match(head)), None)


def refuse_unsupported(head: bytes, what: str) -> None:
    """DataError when `head` starts a media file of a format genq does not read, naming it and what it reads."""
    if (name := unsupported(head)) is not None:
        raise DataError(f"{what} is {name}: genq reads PNG and JPEG images, 16-bit PCM WAV audio, zip archives of "
                        "them, and UTF-8 text (convert it to one of those)")


# ------------------------------------------------------------------------------------------------------ text


def text_stats(f: BinaryIO, what: str = "the file") -> tuple[int, int]:
    """(lines, characters) of UTF-8 text without NUL bytes that holds more than whitespace (a last line without
    its newline counted, a leading byte-order mark not); DataError otherwise."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines, chars, blank, last = 0, 0, 0, True, b"\n"
    while chunk := f.read(CHUNK):
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise DataError(f"{what} is not text: NUL byte at offset {offset + nul} "
                            "(a binary file? text datasets must be UTF-8)")
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise DataError(f"{what} is not UTF-8 text: invalid byte near offset {offset + exc.start}") from None
        if offset == 0:
            text = text.removeprefix("\ufeff")
        blank = blank and not text.strip()
        lines, chars = lines + chunk.count(b"\n"), chars + len(text)
        offset, last = offset + len(chunk), chunk[-1:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{what} is not UTF-8 text: it ends inside a multi-byte character") from None
    if blank:
        raise DataError(f"{what} is empty: it holds no text but whitespace")
    return lines + (last != b"\n"), chars  # a last line without its newline is a line too


def decode_text(raw: bytes, what: str = "the file") -> str:
    """`raw` as text if text_stats accepts it, without a leading byte-order mark."""
    text_stats(io.BytesIO(raw), what)
    return raw.decode("utf-8").removeprefix("\ufeff")


# ---------------------------------------------------------------------------------------------------- images


class ImageHeader(NamedTuple):
    width: int
    height: int
    mode: str  # Pillow's mode: L, RGB, P ...


def _unreadable(what: str, exc: Exception) -> DataError:
    # Pillow's "cannot identify image file" names the Python object it read from, which means nothing to a user.
    reason = "its header is corrupt or truncated" if isinstance(exc, UnidentifiedImageError) else exc
    return DataError(f"{what} looks like an image but cannot be read: {reason}")


def image_header(f: BinaryIO, what: str = "the file") -> ImageHeader:
    """The size and mode of a PNG/JPEG image whose data Pillow can read to the end; DataError otherwise."""
    try:
        with Image.open(f, formats=PIL_FORMATS) as im:
            header = ImageHeader(im.width, im.height, im.mode)
            if im.format == "PNG":
                im.verify()  # every chunk and its CRC, without inflating the pixels
            else:
                # JPEG has no checksums: only decoding finds truncated data, and at 1/8 scale it is cheaper.
                im.draft(im.mode, (im.width // 8, im.height // 8))
                im.load()
            return header
    except Exception as exc:  # Pillow raises many types for corrupt, truncated or oversized images
        raise _unreadable(what, exc) from None


def load_image(f: BinaryIO, mode: str, what: str = "the file") -> Image.Image:
    """The pixels of a PNG/JPEG image converted to `mode` ("L" or "RGB"); DataError when they cannot be decoded."""
    try:
        with Image.open(f, formats=PIL_FORMATS) as im:
            return im.convert(mode)
    except Exception as exc:  # as in image_header; truncated pixel data shows only when decoding
        raise _unreadable(what, exc) from None


# ----------------------------------------------------------------------------------------------------- audio


class WavInfo(NamedTuple):
    channels: int
    sample_rate: int
    frames: int  # as the header counts them, or as many as a file cut short holds

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _as_plain_pcm(raw: bytes, what: str) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE file of PCM samples with its format tag set to plain PCM (the same samples and
    header otherwise): Python's wave module reads no other before Python 3.12. DataError for other samples."""
    pos = 12
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4:pos + 8], "little")
        if raw[pos:pos + 4] == b"fmt ":
            if size >= 40 and raw[pos + 8 + 24:pos + 8 + 26] == b"\x01\x00":  # the SubFormat GUID: PCM
                return raw[:pos + 8] + b"\x01\x00" + raw[pos + 10:]
            break
        pos += 8 + size + size % 2
    raise DataError(f"{what} is a WAVE_FORMAT_EXTENSIBLE file of float or compressed samples; only 16-bit PCM WAV "
                    "files are supported")


def _read_wav(f: BinaryIO, what: str, everything: bool) -> tuple[WavInfo, bytes]:
    src = f
    try:
        try:
            w = wave.open(src)
        except wave.Error as exc:
            if str(exc) != "unknown format: 65534" or not f.seekable():
                raise
            f.seek(0)
            src = io.BytesIO(_as_plain_pcm(f.read(), what))
            w = wave.open(src)
        with w:
            width, channels, rate, frames = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            start = src.tell() if src.seekable() else None  # the samples begin here, once the header is read
            data = w.readframes(frames if everything else 1)
            if start is not None and width and channels:  # a file cut short holds fewer frames than its header says
                frames = min(frames, (src.seek(0, io.SEEK_END) - start) // (width * channels))
    except DataError:
        raise
    except EOFError:
        raise DataError(f"{what} is not a readable PCM WAV file: it ends inside the header") from None
    except Exception as exc:  # wave.Error names the problem (float or compressed formats, missing chunks ...)
        raise DataError(f"{what} is not a readable PCM WAV file: {exc}") from None
    if width != 2:
        raise DataError(f"{what} is {8 * width}-bit; only 16-bit PCM WAV files are supported")
    if rate <= 0:
        raise DataError(f"{what} is not a readable PCM WAV file: its sample rate is {rate}")
    if len(data) < 2 * channels:
        raise DataError(f"{what} holds no audio samples")
    return WavInfo(channels, rate, frames), data


def wav_info(f: BinaryIO, what: str = "the file") -> WavInfo:
    """Channels, rate and length of a 16-bit PCM WAV with at least one frame; DataError for any other WAV."""
    return _read_wav(f, what, everything=False)[0]


def wav_frames(f: BinaryIO, what: str = "the file") -> tuple[WavInfo, bytes]:
    """The header and the interleaved little-endian 16-bit samples of a WAV that wav_info accepts."""
    return _read_wav(f, what, everything=True)


def check_audio_seconds(seconds: float) -> None:
    """DataError when a dataset's clips add up to more than MAX_AUDIO_SECONDS."""
    if seconds > MAX_AUDIO_SECONDS:
        raise DataError(f"the dataset holds more than {MAX_AUDIO_SECONDS // 3600} hours of audio")


# ----------------------------------------------------------------------------------------- zips and folders


def _entry(name: str, what: str) -> PurePosixPath | None:
    """The relative path of a zip member or folder file; None for hidden files and macOS resource forks."""
    text = name.replace("\\", "/")  # some Windows tools write backslashes
    parts = PurePosixPath(text).parts
    if text.startswith("/") or ".." in parts or (parts and ":" in parts[0]) or _CONTROL.search(text):
        raise DataError(f"{what.format(_CONTROL.sub('?', name)[:300])} has an unsafe path")
    if any(part.startswith(".") or part == "__MACOSX" for part in parts):
        return None
    return PurePosixPath(text)


def class_order(name: str) -> tuple[int, int, str]:
    """Sort key of class names: numbers in numeric order ("2" before "10"), then names."""
    return (0, int(name), name) if name.isascii() and name.isdigit() else (1, 0, name)


def class_labels(names: list[PurePosixPath]) -> tuple[list[int] | None, list[str]]:
    """Labels (the folder each file sits in) and the classes in class_order; (None, []) for fewer than two.

    One folder holding everything (a zipped folder) is not a class, so it is dropped first; then every file
    must sit in a folder, or none may.
    """
    folders = [name.parts[:-1] for name in names]
    if folders and all(folders) and len({f[0] for f in folders}) == 1:
        folders = [f[1:] for f in folders]
    loose = [name for name, f in zip(names, folders) if not f]
    if loose and len(loose) < len(names):
        raise DataError(f"'{loose[0]}' sits outside the class folders; put every file in a class folder")
    parents = [f[-1] for f in folders if f]
    classes = sorted(set(parents), key=class_order)
    if len(classes) < 2:
        return None, []
    index = {c: i for i, c in enumerate(classes)}
    return [index[p] for p in parents], classes


@dataclass(frozen=True)
class MediaFile:
    name: PurePosixPath  # relative posix path: only ever shown or used for labels, never a path on disk
    type: str  # png, jpeg or wav
    size: int  # bytes, unpacked
    what: str  # how messages name it: "zip member 'a/b.png'", "'a/b.png'" or "the file"
    source: zipfile.ZipInfo | Path  # where its bytes are: a member of Media.archive, or a file on disk


class Media:
    """The media files of a dataset (one PNG/JPEG/WAV file, or a zip archive or a folder of them): listed in
    name order under the zip rules, typed by magic bytes, of one kind, within the limits, with their classes."""

    def __init__(self, path: Path, max_unpacked: int | None = None):
        self.path = path
        self.archive: zipfile.ZipFile | None = None
        try:
            files, where = self._list(max_unpacked)
            kinds = {MEDIA_KINDS[file.type] for file in files}
            if len(kinds) > 1:
                raise DataError(f"{where} mixes images and audio; upload one kind per dataset")
            self.kind = kinds.pop()
            limit = MAX_FILE_BYTES[self.kind]
            for file in files:
                if file.size > limit:
                    raise DataError(f"{file.what} is larger than {limit >> 20} MiB "
                                    f"(the most for one {'image' if self.kind == 'images' else 'WAV file'})")
            if self.kind == "images" and len(files) > MAX_IMAGES:
                raise DataError(f"{where} holds {len(files)} images (at most {MAX_IMAGES})")
            self.files = files
            self.labels, self.classes = class_labels([file.name for file in files])
        except Exception:
            self.close()
            raise

    def _list(self, max_unpacked: int | None) -> tuple[list[MediaFile], str]:
        """The typed files in name order, and how messages name what holds them."""
        if self.path.is_dir():
            where, what = "the folder", "'{}'"
            found = [(p.relative_to(self.path).as_posix(), p.stat().st_size, p)
                     for p in self.path.rglob("*") if p.is_file()]
        else:
            with open(self.path, "rb") as f:
                head = f.read(16)
            kind = magic(head)
            if kind in MEDIA_KINDS:
                one = MediaFile(PurePosixPath(self.path.name), kind, self.path.stat().st_size, "the file", self.path)
                return [one], "the file"
            if kind != "zip":
                refuse_unsupported(head, "the file")
                raise DataError("the file is not a PNG/JPEG image, a WAV file or a zip archive of them")
            where, what = "the zip archive", "zip member '{}'"
            try:
                self.archive = zipfile.ZipFile(self.path)
            except Exception as exc:  # BadZipFile, undecodable names, truncated archives ...
                raise DataError(f"the file is not a valid zip archive: {exc}") from None
            found = [(m.filename, m.file_size, m) for m in self.archive.infolist() if not m.is_dir()]
        listed = [(entry, size, source) for name, size, source in found
                  if (entry := _entry(name, what)) is not None]
        if not listed:
            raise DataError(f"{where} holds no files")
        if len(listed) > MAX_ZIP_MEMBERS:
            raise DataError(f"{where} holds {len(listed)} files (at most {MAX_ZIP_MEMBERS})")
        if max_unpacked is not None and sum(size for _, size, _ in listed) > max_unpacked:
            raise DataError(f"{where} unpacks to more than {max_unpacked} bytes")
        listed.sort(key=lambda entry: str(entry[0]))
        return [self._typed(name, size, what.format(name), source) for name, size, source in listed], where

    def _typed(self, name: PurePosixPath, size: int, what: str, source: zipfile.ZipInfo | Path) -> MediaFile:
        try:
            with self.archive.open(source) if isinstance(source, zipfile.ZipInfo) else open(source, "rb") as f:
                head = f.read(16)
        except Exception as exc:  # encrypted, unsupported compression, corrupt
            raise DataError(f"{what} cannot be read: {exc}") from None
        found = magic(head)
        if found not in MEDIA_KINDS:
            refuse_unsupported(head, what)
            raise DataError(f"{what} is not a PNG/JPEG image or a WAV file")
        return MediaFile(name, found, size, what, source)

    def read(self, file: MediaFile) -> bytes:
        """All bytes of `file`; reading a zip member to its end checks its CRC."""
        try:
            if isinstance(file.source, zipfile.ZipInfo):
                return self.archive.read(file.source)
            return file.source.read_bytes()
        except Exception as exc:  # a bad CRC, corrupt compressed data, a file gone
            raise DataError(f"{file.what} cannot be read: {exc}") from None

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()

    def __enter__(self) -> Media:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
