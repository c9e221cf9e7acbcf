/*
 * The collector's hot path in C, optional (suite/logger/compiled.py decides):
 *
 * - encode_plain: one read's message records as the bytes written, for the
 *   common case (a plain RFC 5424 message: UTF-8, a header of printable
 *   ASCII, no structured data).  Every other message is handed back, one at
 *   a time and in order, to the Python code (suite/logger/records.py).
 * - take_lines and octet_frames: the two loops of framing.py that cut a
 *   read's LF- or NUL-ended lines and its whole octet-counted frames; every
 *   state across reads stays in the Python decoder.
 *
 * The Python code is the reference: the frames and bytes are the same either
 * way, and tests/logger/test_speedups.py compares the two.  Built at install
 * as an optional extension: when it is missing, or SUITE_PURE_PYTHON=1, the
 * Python code does all of it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../foundation/identity_hash.h"

/*
 * The bytes object being written: made at the estimated size and grown (or
 * cut at the end) in place, so that the records are never copied.
 */
typedef struct {
    PyObject *bytes;
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int
start_buffer(Buffer *buffer, Py_ssize_t capacity)
{
    buffer->bytes = PyBytes_FromStringAndSize(NULL, capacity);
    if (buffer->bytes == NULL)
        return -1;
    buffer->data = PyBytes_AS_STRING(buffer->bytes);
    buffer->size = 0;
    buffer->capacity = capacity;
    return 0;
}

static int
reserve(Buffer *buffer, Py_ssize_t more)
{
    Py_ssize_t need = buffer->size + more;
    if (need <= buffer->capacity)
        return 0;
    Py_ssize_t capacity = buffer->capacity * 2;
    if (capacity < need)
        capacity = need;
    if (_PyBytes_Resize(&buffer->bytes, capacity) < 0) {
        buffer->data = NULL;
        return -1; /* the bytes object is gone */
    }
    buffer->data = PyBytes_AS_STRING(buffer->bytes);
    buffer->capacity = capacity;
    return 0;
}

/* The bytes written, or NULL (an error set). */
static PyObject *
finish_buffer(Buffer *buffer)
{
    if (buffer->bytes != NULL && _PyBytes_Resize(&buffer->bytes, buffer->size) < 0)
        return NULL;
    return buffer->bytes;
}

/* Callers reserve first. */
static inline void
put(Buffer *buffer, const char *text, Py_ssize_t length)
{
    memcpy(buffer->data + buffer->size, text, (size_t)length);
    buffer->size += length;
}

#define PUT_LITERAL(buffer, text) put((buffer), (text), (Py_ssize_t)sizeof(text) - 1)

static const char HEX[] = "0123456789abcdef";

/* Bytes copied as they are inside a JSON string: printable ASCII but `"` and `\`. */
static unsigned char PLAIN[256];

/* Eight bytes at a time (SWAR): whether any of the word's bytes is below N, above N, or N. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define ANY_BELOW(w, n) (((w) - ONES * (n)) & ~(w) & HIGHS)
#define ANY_ABOVE(w, n) ((((w) + ONES * (127 - (n))) | (w)) & HIGHS)
#define ANY_EQUAL(w, n) ANY_BELOW((w) ^ (ONES * (n)), 1)

static inline uint64_t
load64(const unsigned char *at)
{
    uint64_t word;
    memcpy(&word, at, 8);
    return word;
}

/* Where the run of PLAIN bytes from I (before LENGTH) ends. */
static inline Py_ssize_t
plain_run(const unsigned char *text, Py_ssize_t i, Py_ssize_t length)
{
    while (i + 8 <= length) {
        uint64_t w = load64(text + i);
        if (ANY_BELOW(w, 0x20) | ANY_ABOVE(w, 0x7e) | ANY_EQUAL(w, '"') | ANY_EQUAL(w, '\\'))
            break;
        i += 8;
    }
    while (i < length && PLAIN[text[i]])
        i++;
    return i;
}

/* Where the run of printable ASCII bytes (0x21-0x7e: what \S matches there) from I ends. */
static inline Py_ssize_t
word_run(const unsigned char *text, Py_ssize_t i, Py_ssize_t length)
{
    while (i + 8 <= length) {
        uint64_t w = load64(text + i);
        if (ANY_BELOW(w, 0x21) | ANY_ABOVE(w, 0x7e))
            break;
        i += 8;
    }
    while (i < length && text[i] > 0x20 && text[i] < 0x7f)
        i++;
    return i;
}

static inline void
put_unicode_escape(Buffer *buffer, unsigned int code)
{
    char *out = buffer->data + buffer->size;
    out[0] = '\\';
    out[1] = 'u';
    out[2] = HEX[(code >> 12) & 0xf];
    out[3] = HEX[(code >> 8) & 0xf];
    out[4] = HEX[(code >> 4) & 0xf];
    out[5] = HEX[code & 0xf];
    buffer->size += 6;
}

/* One ASCII byte that is not PLAIN, as json.encoder.encode_basestring writes it. */
static inline void
put_ascii_escape(Buffer *buffer, unsigned char c)
{
    char *out = buffer->data + buffer->size;
    char short_form = 0;
    switch (c) {
    case '"': short_form = '"'; break;
    case '\\': short_form = '\\'; break;
    case '\b': short_form = 'b'; break;
    case '\f': short_form = 'f'; break;
    case '\n': short_form = 'n'; break;
    case '\r': short_form = 'r'; break;
    case '\t': short_form = 't'; break;
    }
    if (short_form) {
        out[0] = '\\';
        out[1] = short_form;
        buffer->size += 2;
    }
    else {
        put_unicode_escape(buffer, c); /* C0 controls, and DEL (records.UNSAFE) */
    }
}

/* Whether CODE is one of records.UNSAFE's characters beyond ASCII. */
static inline int
unsafe(unsigned int code)
{
    return (code >= 0x80 && code <= 0x9f) || code == 0x61c || code == 0x200e ||
           code == 0x200f || (code >= 0x2028 && code <= 0x202e) ||
           (code >= 0x2066 && code <= 0x2069);
}

/*
 * TEXT (LENGTH bytes) as the inside of a JSON string, as
 * records._encode_safe(encode_basestring(text)) gives it; -1 when it is not
 * UTF-8 (Python's strict decoder's verdict), with nothing kept.
 */
static int
put_json_text(Buffer *buffer, const unsigned char *text, Py_ssize_t length)
{
    /* At most 6 bytes out for each byte in (a C0 control as \u00XX). */
    if (reserve(buffer, length * 6) < 0)
        return -2;
    Py_ssize_t start = buffer->size;
    Py_ssize_t i = 0;
    while (i < length) {
        Py_ssize_t run = plain_run(text, i, length);
        if (run > i) {
            put(buffer, (const char *)text + i, run - i);
            i = run;
            if (i == length)
                break;
        }
        unsigned char c = text[i];
        if (c < 0x80) {
            put_ascii_escape(buffer, c);
            i += 1;
            continue;
        }
        unsigned int code;
        Py_ssize_t width;
        if (c >= 0xc2 && c <= 0xdf) {
            if (i + 1 >= length || (text[i + 1] & 0xc0) != 0x80)
                goto invalid;
            code = ((unsigned int)(c & 0x1f) << 6) | (text[i + 1] & 0x3f);
            width = 2;
        }
        else if (c >= 0xe0 && c <= 0xef) {
            if (i + 2 >= length)
                goto invalid;
            unsigned char c1 = text[i + 1], c2 = text[i + 2];
            if ((c1 & 0xc0) != 0x80 || (c2 & 0xc0) != 0x80)
                goto invalid;
            if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f))
                goto invalid; /* overlong, or a surrogate */
            code = ((unsigned int)(c & 0x0f) << 12) | ((unsigned int)(c1 & 0x3f) << 6) |
                   (c2 & 0x3f);
            width = 3;
        }
        else if (c >= 0xf0 && c <= 0xf4) {
            if (i + 3 >= length)
                goto invalid;
            unsigned char c1 = text[i + 1];
            if ((c1 & 0xc0) != 0x80 || (text[i + 2] & 0xc0) != 0x80 ||
                (text[i + 3] & 0xc0) != 0x80)
                goto invalid;
            if ((c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
                goto invalid; /* overlong, or beyond U+10FFFF */
            code = 0x10000; /* never unsafe */
            width = 4;
        }
        else {
            goto invalid;
        }
        if (unsafe(code))
            put_unicode_escape(buffer, code);
        else
            put(buffer, (const char *)text + i, width);
        i += width;
    }
    return 0;
invalid:
    buffer->size = start;
    return -1;
}

/* A header field (printable ASCII): `null` for `-`, else a JSON string. */
static int
put_field(Buffer *buffer, const unsigned char *text, Py_ssize_t length, int quotes)
{
    if (length == 1 && text[0] == '-') {
        if (reserve(buffer, 4) < 0)
            return -1;
        PUT_LITERAL(buffer, "null");
        return 0;
    }
    if (reserve(buffer, 2 + length * 2) < 0)
        return -1;
    buffer->data[buffer->size++] = '"';
    if (!quotes) {
        put(buffer, (const char *)text, length);
        buffer->data[buffer->size++] = '"';
        return 0;
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = text[i];
        if (c == '"' || c == '\\')
            buffer->data[buffer->size++] = '\\';
        buffer->data[buffer->size++] = (char)c;
    }
    buffer->data[buffer->size++] = '"';
    return 0;
}

typedef struct {
    int pri;
    const unsigned char *field[5]; /* timestamp, hostname, app, procid, msgid */
    Py_ssize_t field_length[5];
    Py_ssize_t routed_end; /* where the app field ends: what the routing fields come from */
    int quotes; /* whether the header holds `"` or `\\`, which its JSON escapes */
    Py_ssize_t message; /* where the message begins */
} Plain;

/*
 * Whether RAW is what syslog.match_plain_rfc5424 matches, with its header in
 * printable ASCII (so that Python's \S and \d read it as this does): the
 * fields into PLAIN.  0 when it is not; the Python code then decides.
 */
static int
match_plain(const unsigned char *raw, Py_ssize_t length, Plain *plain)
{
    Py_ssize_t i = 0;
    plain->routed_end = 0;
    if (length < 4 || raw[0] != '<')
        return 0;
    i = 1;
    int pri = 0, digits = 0;
    while (i < length && digits < 4 && raw[i] >= '0' && raw[i] <= '9') {
        pri = pri * 10 + (raw[i] - '0');
        digits++;
        i++;
    }
    /* <(1[0-8]\d|19[01]|\d{1,2})> */
    if (digits == 0 || digits > 3 || i >= length || raw[i] != '>')
        return 0;
    if (digits == 3 && (raw[1] != '1' || pri > 191))
        return 0;
    plain->pri = pri;
    i++;
    /* [1-9]\d{0,2} followed by a space */
    if (i >= length || raw[i] < '1' || raw[i] > '9')
        return 0;
    Py_ssize_t version = i;
    i++;
    while (i < length && i - version < 3 && raw[i] >= '0' && raw[i] <= '9')
        i++;
    if (i >= length || raw[i] != ' ')
        return 0;
    i++;
    /* (\S+)( \S+ \S+ \S+ \S+ ): each field printable ASCII, ended by a space */
    for (int f = 0; f < 5; f++) {
        Py_ssize_t start = i;
        i = word_run(raw, i, length);
        if (i == start || i >= length || raw[i] != ' ')
            return 0;
        plain->field[f] = raw + start;
        plain->field_length[f] = i - start;
        if (f == 2)
            plain->routed_end = i;
        i++;
    }
    /* -(?: \ufeff?|\Z) */
    if (i >= length || raw[i] != '-')
        return 0;
    i++;
    if (i < length) {
        if (raw[i] != ' ')
            return 0;
        i++;
        if (length - i >= 3 && raw[i] == 0xef && raw[i + 1] == 0xbb && raw[i + 2] == 0xbf)
            i += 3;
    }
    plain->message = i;
    plain->quotes = memchr(raw, '"', (size_t)i) != NULL || memchr(raw, '\\', (size_t)i) != NULL;
    return 1;
}

static PyObject *
field_or_none(const unsigned char *text, Py_ssize_t length)
{
    if (length == 1 && text[0] == '-')
        Py_RETURN_NONE;
    return PyUnicode_DecodeASCII((const char *)text, length, NULL);
}

/* The identity hash of PLAIN's field F (1: the hostname, lowered; 2: the app); 0 for "-". */
static uint64_t
plain_hash(const Plain *plain, int f, uint64_t seed)
{
    if (plain->field_length[f] == 1 && plain->field[f][0] == '-')
        return 0;
    return suite_hash_text(plain->field[f], plain->field_length[f], seed, f == 1);
}

/* PLAIN's routing fields, (pri, hostname, app), into *ROUTED (replacing what it held). */
static int
make_routed(const Plain *plain, PyObject **routed)
{
    PyObject *hostname = field_or_none(plain->field[1], plain->field_length[1]);
    PyObject *app = field_or_none(plain->field[2], plain->field_length[2]);
    PyObject *pri = PyLong_FromLong(plain->pri);
    PyObject *made = NULL;
    if (hostname && app && pri)
        made = PyTuple_Pack(3, pri, hostname, app);
    Py_XDECREF(hostname);
    Py_XDECREF(app);
    Py_XDECREF(pri);
    if (made == NULL)
        return -1;
    Py_XSETREF(*routed, made);
    return 0;
}

/* The hostname and app hashes of ROUTED, a routing entry (a tuple or None), into OUT. */
static int
routed_hashes(PyObject *routed, uint64_t seed, uint64_t *out)
{
    out[0] = out[1] = 0;
    if (!PyTuple_Check(routed) || PyTuple_GET_SIZE(routed) != 3)
        return 0;
    PyObject *hostname = PyTuple_GET_ITEM(routed, 1), *app = PyTuple_GET_ITEM(routed, 2);
    if (PyUnicode_Check(hostname) && (out[0] = suite_hash_str(hostname, seed, 1)) == 0)
        return -1;
    if (PyUnicode_Check(app) && (out[1] = suite_hash_str(app, seed, 0)) == 0)
        return -1;
    return 0;
}

static int
put_object_bytes(Buffer *buffer, PyObject *bytes)
{
    if (!PyBytes_Check(bytes)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes");
        return -1;
    }
    Py_ssize_t length = PyBytes_GET_SIZE(bytes);
    if (reserve(buffer, length) < 0)
        return -1;
    put(buffer, PyBytes_AS_STRING(bytes), length);
    return 0;
}

/*
 * encode_plain(frames, head, client, syslog_heads, routing, fields, hashes,
 *              seed, fallback, context) -> bytes
 *
 * FRAMES: (message, truncated) pairs of one read.  HEAD: the record's start
 * up to the message's JSON string, CLIENT: `, "client": …` or b"", both
 * already as records._encode_safe makes them.  SYSLOG_HEADS: 192 bytes, by
 * PRI, `, "syslog": {…, "timestamp": `.  ROUTING: None, or a list that gets
 * each message's (pri, hostname, app), unless FIELDS is false: then only
 * the fallback's (below).  HASHES: None, or (with ROUTING) a bytearray
 * that gets 16 bytes a message: its hostname's and its app's identity
 * hashes with SEED (suite/foundation/identity_hash.h), what the logs
 * checks' heard table looks up.  Any message that is not the common case
 * is FALLBACK(message, truncated, context), which returns its record's
 * bytes and appends its routing fields to ROUTING itself (their hashes are
 * made here from them).
 */
static PyObject *
encode_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "encode_plain takes 10 arguments");
        return NULL;
    }
    PyObject *frames = args[0], *head = args[1], *client = args[2], *heads = args[3];
    PyObject *routing = args[4], *hashes = args[6], *fallback = args[8], *context = args[9];
    int fields = PyObject_IsTrue(args[5]);
    if (fields < 0)
        return NULL;
    if (!PyList_Check(frames) || !PyBytes_Check(head) || !PyBytes_Check(client) ||
        !PyTuple_Check(heads) || PyTuple_GET_SIZE(heads) != 192 ||
        (routing != Py_None && !PyList_Check(routing)) ||
        (hashes != Py_None && (routing == Py_None || !PyByteArray_Check(hashes)))) {
        PyErr_SetString(PyExc_TypeError, "encode_plain: bad arguments");
        return NULL;
    }
    uint64_t seed = 0;
    if (hashes != Py_None) {
        seed = (uint64_t)PyLong_AsUnsignedLongLong(args[7]);
        if (seed == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(frames);
    const char *head_text = PyBytes_AS_STRING(head);
    Py_ssize_t head_length = PyBytes_GET_SIZE(head);
    const char *client_text = PyBytes_AS_STRING(client);
    Py_ssize_t client_length = PyBytes_GET_SIZE(client);

    /* Each message's hostname and app hashes, when asked for: written in HASHES itself
     * (one pair a message, plain or not, so COUNT pairs). */
    uint64_t *hashed = NULL, host_hash = 0, app_hash = 0;
    Py_ssize_t hashed_count = 0;
    if (hashes != Py_None) {
        if (PyByteArray_Resize(hashes, count * 16) < 0)
            return NULL;
        hashed = (uint64_t *)PyByteArray_AS_STRING(hashes);
    }
    Buffer buffer;
    if (start_buffer(&buffer, count * (head_length + client_length + 320) + 64) < 0)
        return NULL;
    /* The routing fields of the last plain header, for the next with the same bytes. */
    PyObject *last_routed = NULL;
    const unsigned char *last_header = NULL;
    Py_ssize_t last_header_length = 0;

    for (Py_ssize_t n = 0; n < count; n++) {
        PyObject *frame = PyList_GET_ITEM(frames, n);
        if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) != 2) {
            PyErr_SetString(PyExc_TypeError, "a frame is a (bytes, bool) tuple");
            goto error;
        }
        PyObject *raw = PyTuple_GET_ITEM(frame, 0), *truncated = PyTuple_GET_ITEM(frame, 1);
        int cut = PyObject_IsTrue(truncated);
        if (cut < 0)
            goto error;
        Plain plain;
        if (PyBytes_Check(raw)) {
            const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(raw);
            Py_ssize_t length = PyBytes_GET_SIZE(raw);
            if (match_plain(text, length, &plain)) {
                Py_ssize_t line_start = buffer.size;
                PyObject *syslog_head = PyTuple_GET_ITEM(heads, plain.pri);
                if (!PyBytes_Check(syslog_head)) {
                    PyErr_SetString(PyExc_TypeError, "syslog_heads holds bytes");
                    goto error;
                }
                if (reserve(&buffer, head_length + 1) < 0)
                    goto error;
                put(&buffer, head_text, head_length);
                buffer.data[buffer.size++] = '"';
                int status = put_json_text(&buffer, text + plain.message, length - plain.message);
                if (status == -2)
                    goto error;
                if (status == 0) {
                    if (reserve(&buffer, 1 + client_length) < 0)
                        goto error;
                    buffer.data[buffer.size++] = '"';
                    put(&buffer, client_text, client_length);
                    if (put_object_bytes(&buffer, syslog_head) < 0 ||
                        put_field(&buffer, plain.field[0], plain.field_length[0], plain.quotes) < 0)
                        goto error;
                    static const char *names[4] = {
                        ", \"hostname\": ", ", \"app\": ", ", \"procid\": ", ", \"msgid\": "};
                    static const Py_ssize_t name_lengths[4] = {14, 9, 12, 11};
                    for (int f = 1; f < 5; f++) {
                        if (reserve(&buffer, name_lengths[f - 1]) < 0)
                            goto error;
                        put(&buffer, names[f - 1], name_lengths[f - 1]);
                        if (put_field(&buffer, plain.field[f], plain.field_length[f],
                                      plain.quotes) < 0)
                            goto error;
                    }
                    if (reserve(&buffer, 64) < 0)
                        goto error;
                    PUT_LITERAL(&buffer, ", \"structured_data\": null}");
                    if (cut)
                        PUT_LITERAL(&buffer, ", \"truncated\": true}\n");
                    else
                        PUT_LITERAL(&buffer, "}\n");
                    if (routing != Py_None) {
                        Py_ssize_t header_length = plain.routed_end;
                        if (last_header == NULL || header_length != last_header_length ||
                            memcmp(text, last_header, (size_t)header_length) != 0) {
                            if (fields && make_routed(&plain, &last_routed) < 0)
                                goto error;
                            last_header = text;
                            last_header_length = header_length;
                            if (hashed != NULL) {
                                host_hash = plain_hash(&plain, 1, seed);
                                app_hash = plain_hash(&plain, 2, seed);
                            }
                        }
                        if (fields && PyList_Append(routing, last_routed) < 0)
                            goto error;
                        if (hashed != NULL) {
                            hashed[2 * hashed_count] = host_hash;
                            hashed[2 * hashed_count + 1] = app_hash;
                            hashed_count++;
                        }
                    }
                    continue;
                }
                buffer.size = line_start; /* not UTF-8: the Python code's */
            }
        }
        Py_ssize_t routed_before = hashed != NULL ? PyList_GET_SIZE(routing) : 0;
        PyObject *line = PyObject_CallFunctionObjArgs(
            fallback, raw, cut ? Py_True : Py_False, context, NULL);
        if (line == NULL)
            goto error;
        int failed = put_object_bytes(&buffer, line);
        Py_DECREF(line);
        if (failed < 0)
            goto error;
        if (hashed != NULL) {
            if (!PyList_Check(routing) || PyList_GET_SIZE(routing) != routed_before + 1) {
                PyErr_SetString(PyExc_RuntimeError, "the fallback did not append one routing entry");
                goto error;
            }
            if (routed_hashes(PyList_GET_ITEM(routing, routed_before), seed,
                              &hashed[2 * hashed_count]) < 0)
                goto error;
            hashed_count++;
        }
    }
    Py_XDECREF(last_routed);
    return finish_buffer(&buffer);
error:
    Py_XDECREF(last_routed);
    Py_XDECREF(buffer.bytes);
    return NULL;
}

/* Append (MESSAGE cut to MAX_MESSAGE, whether it was cut) to FRAMES. */
static int
append_frame(PyObject *frames, const unsigned char *message, Py_ssize_t length,
             Py_ssize_t max_message)
{
    Py_ssize_t kept = length > max_message ? max_message : length;
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)message, kept);
    if (bytes == NULL)
        return -1;
    PyObject *frame = PyTuple_New(2);
    if (frame == NULL) {
        Py_DECREF(bytes);
        return -1;
    }
    PyObject *cut = length > max_message ? Py_True : Py_False;
    Py_INCREF(cut);
    PyTuple_SET_ITEM(frame, 0, bytes);
    PyTuple_SET_ITEM(frame, 1, cut);
    int failed = PyList_Append(frames, frame);
    Py_DECREF(frame);
    return failed;
}

/* Whether LINE (LENGTH bytes, starting with a non-zero digit) starts with `LEN SP`. */
static int
is_count(const unsigned char *line, Py_ssize_t length)
{
    /* framing._is_header: a space within the 10 bytes after the first, digits before it */
    Py_ssize_t end = length < 11 ? length : 11;
    for (Py_ssize_t i = 1; i < end; i++) {
        if (line[i] == ' ')
            return 1;
        if (line[i] < '0' || line[i] > '9')
            return 0;
    }
    return 0;
}

/*
 * take_lines(data, start, stop, delimiter, max_message, frames) -> int
 *
 * framing._Lines(data, START, STOP, DELIMITER).take(START, FRAMES,
 * MAX_MESSAGE) without the split: the lines of DATA from START, each ended
 * by DELIMITER (a byte), the last by the other delimiter at STOP unless STOP
 * is DATA's end (there the bytes after the last DELIMITER are not a line
 * yet), appended to FRAMES as (line without its CR, cut to MAX_MESSAGE,
 * whether it was cut), empty ones skipped, up to the first that is
 * octet-counted (`LEN SP`).  Returns where that one, or what follows the
 * last whole line, begins.
 */
static PyObject *
take_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyBytes_Check(args[0]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "take_lines(bytes, int, int, int, int, list)");
        return NULL;
    }
    Py_ssize_t length = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t position = PyLong_AsSsize_t(args[1]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    long delimiter = PyLong_AsLong(args[3]);
    Py_ssize_t max_message = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (position < 0 || stop > length || position > stop + 1 || max_message < 0 ||
        delimiter < 0 || delimiter > 255) {
        PyErr_SetString(PyExc_ValueError, "take_lines: out of range");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    PyObject *frames = args[5];
    while (position <= stop) {
        const unsigned char *found =
            memchr(data + position, (int)delimiter, (size_t)(stop - position));
        Py_ssize_t end;
        if (found != NULL)
            end = found - data;
        else if (stop == length)
            break; /* not ended yet */
        else
            end = stop; /* ended by the other delimiter */
        const unsigned char *line = data + position;
        Py_ssize_t line_length = end - position;
        if (line_length && line[0] >= '1' && line[0] <= '9' && is_count(line, line_length))
            break;
        if (line_length && line[line_length - 1] == '\r')
            line_length--;
        if (line_length && append_frame(frames, line, line_length, max_message) < 0)
            return NULL;
        position = end + 1;
    }
    return PyLong_FromSsize_t(position);
}

/*
 * octet_frames(data, start, max_message, max_frame, frames) -> int
 *
 * framing.SyslogFrameDecoder._octet_frames: the `LEN SP MSG` frames whole
 * in DATA, one after another from START, appended to FRAMES (one LF ending
 * a frame dropped; an LF between frames skipped).  Returns where the first
 * frame that is not such a one begins.
 */
static PyObject *
octet_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "octet_frames(bytes, int, int, int, list)");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_message = PyLong_AsSsize_t(args[2]);
    long long max_frame = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (i < 0 || i > n || max_message < 0) {
        PyErr_SetString(PyExc_ValueError, "octet_frames: out of range");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    PyObject *frames = args[4];
    while (i < n) {
        /* The first space within the 11 bytes from I; digits before it. */
        Py_ssize_t limit = n - i < 11 ? n : i + 11;
        const unsigned char *found = memchr(data + i, ' ', (size_t)(limit - i));
        if (found == NULL)
            break;
        Py_ssize_t space = found - data;
        int digits = space > i;
        long long length = 0;
        for (Py_ssize_t k = i; k < space; k++) {
            if (data[k] < '0' || data[k] > '9') {
                digits = 0;
                break;
            }
            length = length * 10 + (data[k] - '0');
        }
        if (!digits) {
            if (data[i] == '\n') { /* an LF after a frame, beyond its count */
                i += 1;
                continue;
            }
            break;
        }
        if (data[i] == '0')
            break;
        if (length > (long long)(n - space - 1) || length > max_frame)
            break;
        Py_ssize_t end = space + 1 + (Py_ssize_t)length;
        Py_ssize_t message_length = (Py_ssize_t)length;
        if (data[end - 1] == '\n')
            message_length--;
        if (append_frame(frames, data + space + 1, message_length, max_message) < 0)
            return NULL;
        i = end;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"encode_plain", (PyCFunction)(void (*)(void))encode_plain, METH_FASTCALL,
     "One read's message records as bytes; see suite/logger/_speedups.c."},
    {"octet_frames", (PyCFunction)(void (*)(void))octet_frames, METH_FASTCALL,
     "A read's whole octet-counted frames; see suite/logger/_speedups.c."},
    {"take_lines", (PyCFunction)(void (*)(void))take_lines, METH_FASTCALL,
     "One stretch of a read's lines as frames; see suite/logger/_speedups.c."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    for (int c = 0x20; c < 0x7f; c++)
        PLAIN[c] = 1;
    PLAIN['"'] = 0;
    PLAIN['\\'] = 0;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    "suite.logger._speedups",
    "The collector's record formatting in C (optional; records.py is the reference).",
    0,
    methods,
    slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module_definition);
}
