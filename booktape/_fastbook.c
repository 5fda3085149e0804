/* booktape._fastbook: the C twin of the update loops of booktape/bookside.py.
 *
 * BookSide.update and LazySide.update set each level's quantity, one Python step a level
 * (40 million a BTCUSDT day). These functions run the same steps for the common level and
 * hand every other one back: a level is done here only when
 *
 *   - it is a tuple or list of two items, both exact str;
 *   - its price is a plain decimal (digits, at most one point) of at most 15 characters
 *     and not zero: float() of it is one exact division (short_price), the side's key;
 *   - its quantity is a plain decimal of at most 300 characters: float() of it is positive
 *     and finite when a digit is not 0, else it is zero and must be a spelling in the
 *     known zeros (bookside.ZERO_SPELLINGS).
 *
 * The keys are the numbers float() gives; heap pushes and sorted inserts follow
 * heapq.heappush and bisect.insort step for step, so the dict, the heap and the sorted
 * list end up identical to the Python loop's.
 * At the first other level (junk, a long or Decimal-only price, an unknown zero spelling)
 * the function returns its index: the caller applies that one level in Python (which may
 * raise, or switch the side to Decimal keys) and calls again from the next. Only sides
 * with float keys come here (the caller checks ``_exact``).
 *
 * tests/unit/test_fastbook.py holds both loops to the same dict, heap and list.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define SHORT 15        /* bookside._SHORT */
#define FLOAT_LOW 1e-300 /* bookside._FLOAT_LOW, _FLOAT_HIGH */
#define FLOAT_HIGH 1e300

/* 10**0 .. 10**22, each exact in a double */
static const double EXACT_POW10[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define LONGEST_QTY 300 /* a plain decimal this long is a finite float, > 0 unless all zeros */

/* Whether an exact str is a plain decimal: ASCII digits and at most one '.', at least one
 * digit. float() reads such a string as its decimal value, correctly rounded (and
 * nothing else in float()'s grammar is plain). *nonzero tells whether a digit is not 0. */
static int
plain_decimal(PyObject *text, const char **data, Py_ssize_t *size, int *nonzero)
{
    if (!PyUnicode_IS_COMPACT_ASCII(text)) {
        return 0;
    }
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int digits = 0, dots = 0;
    *nonzero = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch >= '0' && ch <= '9') {
            digits = 1;
            *nonzero |= ch != '0';
        }
        else if (ch != '.' || dots++) {
            return 0;
        }
    }
    *data = s;
    *size = n;
    return digits;
}

/* float(text) for a plain decimal of at most LONGEST_QTY characters, read in one pass:
 * 1 and *value; 0: another string; -1: error. At most 15 significant digits and at most
 * 22 after the point make the exact division of two exact doubles; any other plain
 * decimal goes to CPython's own correctly rounded strtod, as float() does. */
static int
plain_float(PyObject *text, double *value)
{
    if (!PyUnicode_IS_COMPACT_ASCII(text) || PyUnicode_GET_LENGTH(text) > LONGEST_QTY) {
        return 0;
    }
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    unsigned long long mantissa = 0;
    int significant = 0, any = 0, fraction = -1; /* fraction: digits after the point */
    for (Py_ssize_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch >= '0' && ch <= '9') {
            any = 1;
            fraction += fraction >= 0;
            if ((mantissa != 0 || ch != '0') && ++significant <= SHORT) {
                mantissa = mantissa * 10 + (unsigned long long)(ch - '0');
            }
        }
        else if (ch != '.' || fraction >= 0) {
            return 0;
        }
        else {
            fraction = 0;
        }
    }
    if (!any) {
        return 0;
    }
    if (significant > SHORT || fraction > 22) {
        *value = PyOS_string_to_double(s, NULL, NULL); /* NUL-terminated (a compact str) */
        return *value == -1.0 && PyErr_Occurred() ? -1 : 1;
    }
    *value = (double)mantissa / EXACT_POW10[fraction < 0 ? 0 : fraction];
    return 1;
}

/* float(price) for a plain decimal of at most 15 characters, in one pass: 1 and *value,
 * or 0 (another string). At most 15 digits and 15 after the point: the exact division. */
static int
short_price(PyObject *text, double *value)
{
    if (!PyUnicode_IS_COMPACT_ASCII(text) || PyUnicode_GET_LENGTH(text) > SHORT) {
        return 0;
    }
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    unsigned long long mantissa = 0;
    int digits = 0, fraction = -1; /* digits after the point; -1: no point */
    for (Py_ssize_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch >= '0' && ch <= '9') {
            mantissa = mantissa * 10 + (unsigned long long)(ch - '0');
            digits = 1;
            fraction += fraction >= 0;
        }
        else if (ch != '.' || fraction >= 0) {
            return 0;
        }
        else {
            fraction = 0;
        }
    }
    *value = (double)mantissa / EXACT_POW10[fraction < 0 ? 0 : fraction];
    return digits;
}

typedef struct {
    PyObject *pair;  /* the level itself when it is a tuple (kept as the value), else NULL */
    PyObject *price;
    PyObject *qty;
    double key;      /* the float key, sign applied */
    int remove;      /* 1: a zero quantity */
} Step;

/* 1: the level is one of ours (step filled in); 0: hand it back to Python; -1: error. */
static int
read_level(PyObject *level, double sign, PyObject *zeros, Step *step)
{
    PyObject *price, *qty;
    if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) == 2) {
        price = PyTuple_GET_ITEM(level, 0);
        qty = PyTuple_GET_ITEM(level, 1);
        step->pair = level;
    }
    else if (PyList_CheckExact(level) && PyList_GET_SIZE(level) == 2) {
        price = PyList_GET_ITEM(level, 0);
        qty = PyList_GET_ITEM(level, 1);
        step->pair = NULL;
    }
    else {
        return 0;
    }
    const char *s;
    Py_ssize_t n;
    int nonzero;
    double value;
    if (!PyUnicode_CheckExact(price) || !PyUnicode_CheckExact(qty) || !short_price(price, &value)
        || !(FLOAT_LOW < value && value < FLOAT_HIGH)) {
        return 0;
    }
    if (!plain_decimal(qty, &s, &n, &nonzero) || n > LONGEST_QTY) {
        return 0; /* float() may still read it (" 1", "1e3", "1_0"): Python's to judge */
    }
    step->remove = !nonzero; /* float(qty) > 0 and finite, or a spelling of zero */
    if (step->remove) {
        int known = PySet_Contains(zeros, qty);
        if (known <= 0) {
            return known; /* 0: a spelling Python must judge (zero or junk); -1: error */
        }
    }
    step->price = price;
    step->qty = qty;
    step->key = value * sign;
    return 1;
}

/* book[key] = (price, qty) */
static int
store(PyObject *book, PyObject *key, Step *step)
{
    if (step->pair != NULL) {
        return PyDict_SetItem(book, key, step->pair);
    }
    PyObject *pair = PyTuple_Pack(2, step->price, step->qty);
    if (pair == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(book, key, pair);
    Py_DECREF(pair);
    return rc;
}

/* book.pop(key, None), no KeyError raised for a price the book does not hold. */
static int
pop(PyObject *book, PyObject *key)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_Pop(book, key, NULL) < 0 ? -1 : 0;
#else
    PyObject *value = _PyDict_Pop(book, key, Py_None); /* one hash, one lookup */
    if (value == NULL) {
        return -1;
    }
    Py_DECREF(value);
    return 0;
#endif
}

/* Whether a < b, for two heap or list items (floats on a float-keyed side). */
static int
less(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b)) {
        return PyFloat_AS_DOUBLE(a) < PyFloat_AS_DOUBLE(b);
    }
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* heapq.heappush(heap, item): append, then heapq's _siftdown. */
static int
heap_push(PyObject *heap, PyObject *item)
{
    if (PyList_Append(heap, item) < 0) {
        return -1;
    }
    Py_ssize_t pos = PyList_GET_SIZE(heap) - 1;
    PyObject **items = ((PyListObject *)heap)->ob_item;
    PyObject *newitem = items[pos];
    while (pos > 0) {
        Py_ssize_t parentpos = (pos - 1) >> 1;
        PyObject *parent = items[parentpos];
        int lt = less(newitem, parent);
        if (lt < 0) {
            return -1;
        }
        if (!lt) {
            break;
        }
        items = ((PyListObject *)heap)->ob_item; /* a comparison may not resize; re-read */
        items[pos] = parent;
        pos = parentpos;
    }
    items[pos] = newitem;
    return 0;
}

/* bisect.bisect_left (right=0) or bisect_right (right=1) of a float in a sorted list. */
static Py_ssize_t
bisect(PyObject *keys, PyObject *key, int right)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys);
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        PyObject *item = PyList_GET_ITEM(keys, mid);
        int lt = right ? less(key, item) : less(item, key);
        if (lt < 0) {
            return -1;
        }
        if (right ? lt : !lt) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* The arguments both functions share; levels must be a list or a tuple. */
static int
unpack(PyObject *const *args, Py_ssize_t nargs, const char *name, PyObject **book,
       PyObject **order, double *sign, PyObject **levels, Py_ssize_t *start, PyObject **zeros)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "%s() takes 6 arguments (%zd given)", name, nargs);
        return 0;
    }
    *book = args[0];
    *order = args[1];
    *levels = args[3];
    *zeros = args[5];
    if (!PyDict_CheckExact(*book) || !PyList_CheckExact(*order) || !PyAnySet_Check(*zeros)
        || !(PyList_CheckExact(*levels) || PyTuple_CheckExact(*levels))) {
        PyErr_Format(PyExc_TypeError, "%s(): dict, list, sign, list or tuple, start, set", name);
        return 0;
    }
    *sign = PyFloat_AsDouble(args[2]);
    *start = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) {
        return 0;
    }
    if (*start < 0) {
        PyErr_Format(PyExc_ValueError, "%s(): start must not be negative", name);
        return 0;
    }
    return 1;
}

static PyObject *
level_at(PyObject *levels, Py_ssize_t i)
{
    return PyList_CheckExact(levels) ? PyList_GET_ITEM(levels, i) : PyTuple_GET_ITEM(levels, i);
}

static Py_ssize_t
length(PyObject *levels)
{
    return PyList_CheckExact(levels) ? PyList_GET_SIZE(levels) : PyTuple_GET_SIZE(levels);
}

/* One level applied to a side: LazySide's (the dict and the heap). */
static int
apply_lazy(PyObject *book, PyObject *heap, PyObject *key, Step *step)
{
    if (step->remove) { /* book.pop(key, None) */
        return pop(book, key);
    }
    /* if key not in book: heappush(heap, key); book[key] = (price, qty) */
    Py_ssize_t before = PyDict_GET_SIZE(book);
    int rc = store(book, key, step);
    if (rc == 0 && PyDict_GET_SIZE(book) > before) { /* a new price */
        rc = heap_push(heap, key);
    }
    return rc;
}

/* One level applied to a side: BookSide's (the dict and the sorted keys). */
static int
apply_sorted(PyObject *book, PyObject *keys, PyObject *key, Step *step)
{
    Py_ssize_t before = PyDict_GET_SIZE(book);
    if (step->remove) { /* if book.pop(key, None) is not None: del keys[bisect_left(..)] */
        int rc = pop(book, key);
        if (rc == 0 && PyDict_GET_SIZE(book) < before) {
            Py_ssize_t at = bisect(keys, key, 0);
            rc = at < 0 ? -1 : PyList_SetSlice(keys, at, at + 1, NULL);
        }
        return rc;
    }
    /* if key not in book: insort(keys, key); book[key] = (price, qty) */
    int rc = store(book, key, step);
    if (rc == 0 && PyDict_GET_SIZE(book) > before) { /* a new price */
        Py_ssize_t at = bisect(keys, key, 1);
        rc = at < 0 ? -1 : PyList_Insert(keys, at, key);
    }
    return rc;
}

/* The loop both update functions share: levels[start:] until one is left to Python. */
static PyObject *
update(PyObject *const *args, Py_ssize_t nargs, const char *name,
       int (*apply)(PyObject *, PyObject *, PyObject *, Step *))
{
    PyObject *book, *order, *levels, *zeros;
    double sign;
    Py_ssize_t start;
    if (!unpack(args, nargs, name, &book, &order, &sign, &levels, &start, &zeros)) {
        return NULL;
    }
    for (Py_ssize_t i = start; i < length(levels); i++) {
        Step step;
        int ours = read_level(level_at(levels, i), sign, zeros, &step);
        if (ours <= 0) {
            return ours < 0 ? NULL : PyLong_FromSsize_t(i);
        }
        PyObject *key = PyFloat_FromDouble(step.key);
        if (key == NULL) {
            return NULL;
        }
        int rc = apply(book, order, key, &step);
        Py_DECREF(key);
        if (rc < 0) {
            return NULL;
        }
    }
    return PyLong_FromLong(-1);
}

PyDoc_STRVAR(lazy_update_doc,
"lazy_update(book, heap, sign, levels, start, zeros, /)\n--\n\n"
"LazySide.update's loop over levels[start:] (sign: the inner key's sign, +1.0 or -1.0):\n"
"-1 when every level is applied, else the index of the first level left to Python.");

static PyObject *
lazy_update(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return update(args, nargs, "lazy_update", apply_lazy);
}

PyDoc_STRVAR(sorted_update_doc,
"sorted_update(book, keys, sign, levels, start, zeros, /)\n--\n\n"
"BookSide.update's loop over levels[start:] (sign: the key's sign, +1.0 or -1.0):\n"
"-1 when every level is applied, else the index of the first level left to Python.");

static PyObject *
sorted_update(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    return update(args, nargs, "sorted_update", apply_sorted);
}

PyDoc_STRVAR(level_floats_doc,
"level_floats(levels, /)\n--\n\n"
"The levels' price and quantity strings as float() reads them, packed as native float64\n"
"values (price, qty, price, qty, ...), when every one is a plain decimal string (digits,\n"
"at most one point) of at most 300 characters; else None.");

static PyObject *
level_floats(PyObject *Py_UNUSED(module), PyObject *levels)
{
    if (!PyList_CheckExact(levels) && !PyTuple_CheckExact(levels)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = length(levels);
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * 2 * (Py_ssize_t)sizeof(double));
    if (out == NULL) {
        return NULL;
    }
    double *values = (double *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *level = level_at(levels, i);
        if (!PyTuple_CheckExact(level) || PyTuple_GET_SIZE(level) != 2) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        for (Py_ssize_t j = 0; j < 2; j++) {
            PyObject *text = PyTuple_GET_ITEM(level, j);
            double value;
            int ours = PyUnicode_CheckExact(text) ? plain_float(text, &value) : 0;
            if (ours <= 0) {
                Py_DECREF(out);
                if (ours < 0) {
                    return NULL;
                }
                Py_RETURN_NONE;
            }
            values[2 * i + j] = value;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"lazy_update", (PyCFunction)(void (*)(void))lazy_update, METH_FASTCALL, lazy_update_doc},
    {"sorted_update", (PyCFunction)(void (*)(void))sorted_update, METH_FASTCALL,
     sorted_update_doc},
    {"level_floats", level_floats, METH_O, level_floats_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "booktape._fastbook",
    "booktape.bookside's update loops in C (built when a C compiler is there).",
    0,       /* no per-module state */
    methods,
    NULL,    /* no slots */
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fastbook(void)
{
    return PyModuleDef_Init(&module);
}
