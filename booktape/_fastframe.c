/* booktape._fastframe: the C twin of booktape/fastframe.py's layout regex.
 *
 * One forward pass over a frame, accepting exactly what fastframe._FRAME.fullmatch accepts
 * (Binance's combined spot depth layout, every piece a JSON token) and refusing the same
 * frames for the same reasons (the event type past 200 bytes, U > u, an id past 2**63-1).
 * The regex stays the reference: booktape.fastframe uses this module only when it was
 * built, and tests/unit/test_fastframe.py checks both on real frames, their mutants and
 * generated ones. Nothing here allocates until the frame is accepted; every read is bounds
 * checked against the end of the bytes object, which is never written.
 *
 *     {"stream":"<s>","data":{"e":"depthUpdate","E":<n>,"s":"<s>","U":<n>,"u":<n>,
 *      "b":[["<d>","<d>"],...],"a":[["<d>","<d>"],...]}}
 *
 * <s>: printable ASCII without '"' or '\'; <n>: 0 or [1-9][0-9]{0,18}; <d>: [0-9.]*.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define MAX_DIGITS 19        /* 2**63-1 has 19 digits; fastframe._INT takes no more */
#define DEPTH_WITHIN 200     /* classify_frame looks for "e":"depthUpdate" this far */
#define MAX_ID 9223372036854775807ULL

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Cursor;

/* The literal s (n bytes) at the cursor: consumed, or 0 and the cursor is left as it was. */
static int
literal(Cursor *c, const char *s, size_t n)
{
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) {
        return 0;
    }
    c->p += n;
    return 1;
}

#define LITERAL(c, s) literal((c), (s), sizeof(s) - 1)

/* A JSON string body as the regex's [ !#-\[\]-~]*+: up to the first other byte. */
static void
string_body(Cursor *c)
{
    while (c->p < c->end) {
        unsigned char ch = *c->p;
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\') {
            return;
        }
        c->p++;
    }
}

/* [0-9.]*+ */
static void
decimal_body(Cursor *c)
{
    while (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || *c->p == '.')) {
        c->p++;
    }
}

/* 0|[1-9][0-9]{0,18}+ ; 19 digits always fit in 64 unsigned bits. */
static int
integer(Cursor *c, unsigned long long *value)
{
    if (c->p >= c->end) {
        return 0;
    }
    if (*c->p == '0') {
        c->p++;
        *value = 0;
        return 1;
    }
    if (*c->p < '1' || *c->p > '9') {
        return 0;
    }
    unsigned long long v = 0;
    int digits = 0;
    while (c->p < c->end && digits < MAX_DIGITS && *c->p >= '0' && *c->p <= '9') {
        v = v * 10 + (unsigned long long)(*c->p - '0');
        c->p++;
        digits++;
    }
    *value = v;
    return 1;
}

/* \["[0-9.]*+","[0-9.]*+"\] */
static int
level(Cursor *c)
{
    if (!LITERAL(c, "[\"")) {
        return 0;
    }
    decimal_body(c);
    if (!LITERAL(c, "\",\"")) {
        return 0;
    }
    decimal_body(c);
    return LITERAL(c, "\"]");
}

/* (?:LEVEL(?:,LEVEL)*+)?+ followed by the closing bracket (consumed); counts the levels. */
static int
levels(Cursor *c, Py_ssize_t *count)
{
    *count = 0;
    if (c->p < c->end && *c->p == '[') {
        if (!level(c)) {
            return 0;
        }
        *count = 1;
        while (c->p < c->end && *c->p == ',') {
            c->p++;
            if (!level(c)) {
                return 0;
            }
            (*count)++;
        }
    }
    return LITERAL(c, "]");
}

typedef struct {
    const unsigned char *stream;
    Py_ssize_t stream_len;
    const unsigned char *symbol;
    Py_ssize_t symbol_len;
    unsigned long long event_time;
    unsigned long long first;
    unsigned long long last;
    const unsigned char *bids; /* the first bid level's '[' (or the list's ']') */
    Py_ssize_t bid_count;
    const unsigned char *asks;
    Py_ssize_t ask_count;
    const unsigned char *end; /* the frame's end */
} Fields;

/* 1 when the frame is in the layout (and its fields are filled in), else 0. */
static int
scan(const unsigned char *start, Py_ssize_t size, Fields *f)
{
    Cursor c = {start, start + size};
    f->end = c.end;
    if (!LITERAL(&c, "{\"stream\":\"")) {
        return 0;
    }
    f->stream = c.p;
    string_body(&c);
    f->stream_len = c.p - f->stream;
    if (!LITERAL(&c, "\",\"data\":{\"e\":\"depthUpdate\",\"E\":")) {
        return 0;
    }
    if ((c.p - start) - 5 > DEPTH_WITHIN) { /* the regex's match.start(2) - 5 */
        return 0;
    }
    if (!integer(&c, &f->event_time) || !LITERAL(&c, ",\"s\":\"")) {
        return 0;
    }
    f->symbol = c.p;
    string_body(&c);
    f->symbol_len = c.p - f->symbol;
    if (!LITERAL(&c, "\",\"U\":") || !integer(&c, &f->first) || !LITERAL(&c, ",\"u\":")
        || !integer(&c, &f->last) || !LITERAL(&c, ",\"b\":[")) {
        return 0;
    }
    f->bids = c.p;
    if (!levels(&c, &f->bid_count) || !LITERAL(&c, ",\"a\":[")) {
        return 0;
    }
    f->asks = c.p;
    if (!levels(&c, &f->ask_count) || !LITERAL(&c, "}}") || c.p != c.end) {
        return 0;
    }
    return f->first <= f->last && f->last <= MAX_ID;
}

/* 1: the frame is in the layout (f filled in); 0: it is not; -1: not bytes (raised). */
static int
scan_frame(PyObject *frame, Fields *f)
{
    if (!PyBytes_Check(frame)) {
        PyErr_Format(PyExc_TypeError, "a frame is bytes, not %.100s", Py_TYPE(frame)->tp_name);
        return -1;
    }
    return scan((const unsigned char *)PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), f);
}

PyDoc_STRVAR(fields_doc,
"fields(frame, /)\n--\n\n"
"(stream, E, symbol, U, u) of a frame in the layout, proven to be JSON, or None:\n"
"booktape.fastframe._fields, in C.");

static PyObject *
fields(PyObject *Py_UNUSED(module), PyObject *frame)
{
    Fields f;
    int found = scan_frame(frame, &f);
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    return Py_BuildValue(
        "(y#Ky#KK)", (const char *)f.stream, f.stream_len, f.event_time,
        (const char *)f.symbol, f.symbol_len, f.first, f.last);
}

PyDoc_STRVAR(spot_depth_doc,
"spot_depth(frame, /)\n--\n\n"
"(symbol, U, u, E) of a frame in the layout, proven to be JSON, or None:\n"
"booktape.fastframe.spot_depth, in C.");

static PyObject *
spot_depth(PyObject *Py_UNUSED(module), PyObject *frame)
{
    Fields f;
    int found = scan_frame(frame, &f);
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *symbol = PyUnicode_DecodeASCII((const char *)f.symbol, f.symbol_len, NULL);
    if (symbol == NULL) {
        return NULL;
    }
    PyObject *first = PyLong_FromUnsignedLongLong(f.first);
    PyObject *last = PyLong_FromUnsignedLongLong(f.last);
    PyObject *event_time = PyLong_FromUnsignedLongLong(f.event_time);
    PyObject *out = PyTuple_New(4);
    if (first == NULL || last == NULL || event_time == NULL || out == NULL) {
        Py_DECREF(symbol);
        Py_XDECREF(first);
        Py_XDECREF(last);
        Py_XDECREF(event_time);
        Py_XDECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, symbol);
    PyTuple_SET_ITEM(out, 1, first);
    PyTuple_SET_ITEM(out, 2, last);
    PyTuple_SET_ITEM(out, 3, event_time);
    return out;
}

/* A [0-9.]* string of the frame as a str (ASCII: one byte a character). */
static PyObject *
ascii_str(const unsigned char *start, const unsigned char *stop)
{
    Py_ssize_t n = stop - start;
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(s), start, (size_t)n);
    }
    return s;
}

/* The ``count`` levels from ``p`` (a list scan() accepted) as a tuple of (price, qty). */
static PyObject *
level_tuple(const unsigned char *p, const unsigned char *end, Py_ssize_t count)
{
    PyObject *out = PyTuple_New(count);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        /* ["<d>","<d>"] and then ',' or ']': scan() proved it, the quotes bound each <d> */
        const unsigned char *price = p + 2;
        const unsigned char *price_end = memchr(price, '"', (size_t)(end - price));
        const unsigned char *qty = price_end == NULL ? NULL : price_end + 3;
        const unsigned char *qty_end =
            qty == NULL || qty >= end ? NULL : memchr(qty, '"', (size_t)(end - qty));
        if (qty_end == NULL) { /* cannot be: scan() proved the layout */
            Py_DECREF(out);
            PyErr_SetString(PyExc_SystemError, "depth_levels: a level off the layout");
            return NULL;
        }
        p = qty_end + 3;
        PyObject *pair = PyTuple_New(2);
        PyObject *a = ascii_str(price, price_end);
        PyObject *b = ascii_str(qty, qty_end);
        if (pair == NULL || a == NULL || b == NULL) {
            Py_XDECREF(pair);
            Py_XDECREF(a);
            Py_XDECREF(b);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, a);
        PyTuple_SET_ITEM(pair, 1, b);
        PyTuple_SET_ITEM(out, i, pair);
    }
    return out;
}

PyDoc_STRVAR(depth_levels_doc,
"depth_levels(frame, /)\n--\n\n"
"(bids, asks) of a frame in the layout, proven to be JSON, each a tuple of (price, qty)\n"
"str pairs as the frame lists them (what orjson and binance._levels give), or None.");

static PyObject *
depth_levels(PyObject *Py_UNUSED(module), PyObject *frame)
{
    Fields f;
    int found = scan_frame(frame, &f);
    if (found <= 0) {
        return found < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *bids = level_tuple(f.bids, f.end, f.bid_count);
    if (bids == NULL) {
        return NULL;
    }
    PyObject *asks = level_tuple(f.asks, f.end, f.ask_count);
    if (asks == NULL) {
        Py_DECREF(bids);
        return NULL;
    }
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(bids);
        Py_DECREF(asks);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, bids);
    PyTuple_SET_ITEM(out, 1, asks);
    return out;
}

/* --- record lines in encode_msg's own layout (booktape.codec.own_msg) ----------------- */

#define MAX_NS 9223372036854775807ULL /* codec.MAX_NS */
#define MAX_CONN 128

static int
conn_char(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
           || ch == '_' || ch == '.' || ch == ':' || ch == '-';
}

/* One line (without its newline) as codec.own_msg reads it: 1 and (t, conn, frame) filled
 * in when it is in the own layout, else 0. */
static int
own_line(const unsigned char *p, const unsigned char *end, unsigned long long *t,
         const unsigned char **conn, Py_ssize_t *conn_len, const unsigned char **frame)
{
    Cursor c = {p, end};
    if (!LITERAL(&c, "{\"k\":\"msg\",\"t\":") || !integer(&c, t) || *t > MAX_NS
        || !LITERAL(&c, ",\"c\":\"")) {
        return 0;
    }
    *conn = c.p;
    while (c.p < c.end && c.p - *conn < MAX_CONN && conn_char(*c.p)) {
        c.p++;
    }
    *conn_len = c.p - *conn;
    if (*conn_len == 0 || !LITERAL(&c, "\",\"m\":") || c.p >= c.end || end[-1] != '}') {
        return 0;
    }
    *frame = c.p;
    return 1;
}

PyDoc_STRVAR(own_msgs_doc,
"own_msgs(block, end, /)\n--\n\n"
"The lines of block[:end], whole record lines (each ends with a newline): for a line in\n"
"encode_msg's own layout the tuple (t, c, frame) that codec.own_msg gives, for any other\n"
"line its bytes without the newline.");

static PyObject *
own_msgs(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "own_msgs(block: bytes, end: int)");
        return NULL;
    }
    PyObject *block = args[0];
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0 || size > PyBytes_GET_SIZE(block)) {
        PyErr_SetString(PyExc_ValueError, "own_msgs: end outside the block");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(block);
    const unsigned char *end = p + size;
    PyObject *out = PyList_New(0);
    PyObject *last_conn = NULL; /* the connection id of the line before, reused when equal */
    if (out == NULL) {
        return NULL;
    }
    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *stop = nl == NULL ? end : nl;
        unsigned long long t;
        const unsigned char *conn, *frame;
        Py_ssize_t conn_len;
        PyObject *item;
        if (own_line(p, stop, &t, &conn, &conn_len, &frame)) {
            if (last_conn == NULL || PyUnicode_GET_LENGTH(last_conn) != conn_len
                || memcmp(PyUnicode_1BYTE_DATA(last_conn), conn, (size_t)conn_len) != 0) {
                Py_XDECREF(last_conn);
                last_conn = ascii_str(conn, conn + conn_len);
                if (last_conn == NULL) {
                    Py_DECREF(out);
                    return NULL;
                }
            }
            item = Py_BuildValue("(KOy#)", t, last_conn, (const char *)frame,
                                 (Py_ssize_t)(stop - 1 - frame));
        }
        else {
            item = PyBytes_FromStringAndSize((const char *)p, stop - p);
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_XDECREF(last_conn);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
        p = stop + 1;
    }
    Py_XDECREF(last_conn);
    return out;
}

static PyMethodDef methods[] = {
    {"fields", fields, METH_O, fields_doc},
    {"spot_depth", spot_depth, METH_O, spot_depth_doc},
    {"depth_levels", depth_levels, METH_O, depth_levels_doc},
    {"own_msgs", (PyCFunction)(void (*)(void))own_msgs, METH_FASTCALL, own_msgs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "booktape._fastframe",
    "booktape.fastframe's layout regex in C (built when a C compiler is there).",
    0,       /* no per-module state */
    methods,
    NULL,    /* no slots */
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fastframe(void)
{
    return PyModuleDef_Init(&module);
}
