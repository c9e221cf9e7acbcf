/*
 * The heard table in C: suite/names/heard_table.py describes it, and its
 * HeardDicts is the reference the tests hold this to.
 *
 * One open-addressed array of slots (the identity's hash, when last heard),
 * at most 70% full, probed linearly: 16 bytes a slot, so that a table of
 * 10,000 identities is 256 KiB.  A slot's hash is 0 when empty and 1 when
 * its entry was removed (a tombstone, skipped by probes, reused by
 * additions, gone at the next resize); an identity's hash is never either
 * (suite/foundation/identity_hash.h, the hash the collector's parser
 * computes too).  Each slot's (host form, app) tuple and whether it waits
 * are kept in arrays beside it, touched only when a waiting entry is heard
 * and by the name server's own calls: a message touches its slot alone.
 *
 * HeardTable.heard hashes a read's messages (or takes the hashes the
 * parser made) in runs of RUN and probes each run with the slots of the
 * AHEAD next asked for from memory meanwhile: by the time a collector
 * streaming records comes back to an identity its slot has left the cache,
 * and fetched one after another they would cost a wait each.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../foundation/identity_hash.h"

#define EMPTY 0
#define REMOVED 1
#define MIN_CAPACITY 16
#define RUN 256 /* hashes probed together */
#define AHEAD 16 /* slots asked for ahead of their probe */

typedef struct {
    uint64_t hash;
    double last; /* NAN: not heard since added */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    PyObject **keys;         /* (host, app) of each slot in use, owned */
    unsigned char *waits;    /* whether hearing each slot is told */
    Py_ssize_t capacity;     /* a power of two, or 0 */
    Py_ssize_t used;         /* entries */
    Py_ssize_t filled;       /* entries and tombstones */
    Py_ssize_t waiting;      /* entries that wait */
    uint64_t seed;
    PyObject *hosts;         /* host form -> how many entries have it (int) */
} HeardTable;

/* The hash of host STR as matched: its str.lower(); 0 on error. */
static inline uint64_t
hash_host(HeardTable *self, PyObject *str)
{
    return suite_hash_str(str, self->seed, 1);
}

static inline uint64_t
hash_app(HeardTable *self, PyObject *str)
{
    return suite_hash_str(str, self->seed, 0);
}

/* Whether the str A and B are equal (compared as bytes when both are ASCII). */
static inline int
same_text(PyObject *a, PyObject *b)
{
    if (PyUnicode_IS_COMPACT_ASCII(a) && PyUnicode_IS_COMPACT_ASCII(b)) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(a);
        return length == PyUnicode_GET_LENGTH(b) &&
               memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)length) == 0;
    }
    return PyUnicode_Compare(a, b) == 0;
}

static int
key_hash(HeardTable *self, PyObject *host, PyObject *app, uint64_t *hash)
{
    if (!PyUnicode_Check(host) || !PyUnicode_Check(app)) {
        PyErr_SetString(PyExc_TypeError, "host and app are str");
        return -1;
    }
    uint64_t host_hash = hash_host(self, host), app_hash = host_hash ? hash_app(self, app) : 0;
    if (app_hash == 0)
        return -1;
    *hash = suite_identity(host_hash, app_hash);
    return 0;
}

/* The slot of (HOST, APP) with hash HASH, -1 when absent, -2 on error. */
static Py_ssize_t
find(HeardTable *self, uint64_t hash, PyObject *host, PyObject *app)
{
    if (self->capacity == 0)
        return -1;
    size_t mask = (size_t)self->capacity - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        uint64_t found = self->slots[i].hash;
        if (found == EMPTY)
            return -1;
        if (found == hash) {
            PyObject *key = self->keys[i];
            int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(key, 0), host, Py_EQ);
            if (same > 0)
                same = PyObject_RichCompareBool(PyTuple_GET_ITEM(key, 1), app, Py_EQ);
            if (same < 0)
                return -2;
            if (same)
                return (Py_ssize_t)i;
        }
    }
}

static int
resize(HeardTable *self, Py_ssize_t capacity)
{
    Slot *slots = PyMem_Calloc((size_t)capacity, sizeof(Slot));
    PyObject **keys = PyMem_Calloc((size_t)capacity, sizeof(PyObject *));
    unsigned char *waits = PyMem_Calloc((size_t)capacity, 1);
    if (slots == NULL || keys == NULL || waits == NULL) {
        PyMem_Free(slots);
        PyMem_Free(keys);
        PyMem_Free(waits);
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)capacity - 1;
    for (Py_ssize_t old = 0; old < self->capacity; old++) {
        uint64_t hash = self->slots[old].hash;
        if (hash <= REMOVED)
            continue;
        size_t i = (size_t)hash & mask;
        while (slots[i].hash != EMPTY)
            i = (i + 1) & mask;
        slots[i] = self->slots[old];
        keys[i] = self->keys[old];
        waits[i] = self->waits[old];
    }
    PyMem_Free(self->slots);
    PyMem_Free(self->keys);
    PyMem_Free(self->waits);
    self->slots = slots;
    self->keys = keys;
    self->waits = waits;
    self->capacity = capacity;
    self->filled = self->used;
    return 0;
}

static int
count_host(HeardTable *self, PyObject *host, long change)
{
    PyObject *count = PyDict_GetItemWithError(self->hosts, host);
    if (count == NULL && PyErr_Occurred())
        return -1;
    long now = (count == NULL ? 0 : PyLong_AsLong(count)) + change;
    if (now <= 0)
        return PyDict_DelItem(self->hosts, host);
    PyObject *value = PyLong_FromLong(now);
    if (value == NULL)
        return -1;
    int failed = PyDict_SetItem(self->hosts, host, value);
    Py_DECREF(value);
    return failed;
}

static PyObject *
HeardTable_add(HeardTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(host, app)");
        return NULL;
    }
    PyObject *host = args[0], *app = args[1];
    uint64_t hash;
    if (key_hash(self, host, app, &hash) < 0)
        return NULL;
    Py_ssize_t at = find(self, hash, host, app);
    if (at == -2)
        return NULL;
    if (at >= 0) {
        self->slots[at].last = NAN;
        Py_RETURN_NONE;
    }
    if ((self->filled + 1) * 10 > self->capacity * 7) {
        Py_ssize_t capacity = MIN_CAPACITY;
        while (capacity * 7 < (self->used + 1) * 10)
            capacity *= 2;
        if (resize(self, capacity) < 0)
            return NULL;
    }
    PyObject *key = PyTuple_Pack(2, host, app);
    if (key == NULL)
        return NULL;
    if (count_host(self, host, 1) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    size_t mask = (size_t)self->capacity - 1;
    size_t i = (size_t)hash & mask;
    while (self->slots[i].hash > REMOVED)
        i = (i + 1) & mask;
    if (self->slots[i].hash == EMPTY)
        self->filled++;
    self->slots[i].hash = hash;
    self->slots[i].last = NAN;
    self->keys[i] = key;
    self->waits[i] = 0;
    self->used++;
    Py_RETURN_NONE;
}

/* The slot of (ARGS[0], ARGS[1]), -1 when absent, -2 on error. */
static Py_ssize_t
slot_of(HeardTable *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
        const char *usage)
{
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -2;
    }
    uint64_t hash;
    if (key_hash(self, args[0], args[1], &hash) < 0)
        return -2;
    return find(self, hash, args[0], args[1]);
}

static PyObject *
HeardTable_remove(HeardTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t at = slot_of(self, args, nargs, 2, "remove(host, app)");
    if (at == -2)
        return NULL;
    if (at >= 0) {
        if (count_host(self, args[0], -1) < 0)
            return NULL;
        self->slots[at].hash = REMOVED;
        Py_CLEAR(self->keys[at]);
        if (self->waits[at])
            self->waiting--;
        self->waits[at] = 0;
        self->used--;
    }
    Py_RETURN_NONE;
}

static void
release(HeardTable *self)
{
    for (Py_ssize_t i = 0; i < self->capacity; i++)
        Py_XDECREF(self->keys[i]);
    PyMem_Free(self->slots);
    PyMem_Free(self->keys);
    PyMem_Free(self->waits);
    self->slots = NULL;
    self->keys = NULL;
    self->waits = NULL;
    self->capacity = self->used = self->filled = self->waiting = 0;
}

static PyObject *
HeardTable_clear(HeardTable *self, PyObject *Py_UNUSED(ignored))
{
    release(self);
    PyDict_Clear(self->hosts);
    Py_RETURN_NONE;
}

static PyObject *
HeardTable_keys(HeardTable *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *keys = PyList_New(0);
    if (keys == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->capacity; i++) {
        if (self->keys[i] != NULL && PyList_Append(keys, self->keys[i]) < 0) {
            Py_DECREF(keys);
            return NULL;
        }
    }
    return keys;
}

static PyObject *
HeardTable_last(HeardTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t at = slot_of(self, args, nargs, 2, "last(host, app)");
    if (at == -2)
        return NULL;
    if (at < 0 || isnan(self->slots[at].last))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(self->slots[at].last);
}

static PyObject *
HeardTable_wait(HeardTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t at = slot_of(self, args, nargs, 3, "wait(host, app, waits)");
    if (at == -2)
        return NULL;
    int waits = PyObject_IsTrue(args[2]);
    if (waits < 0)
        return NULL;
    if (at >= 0 && self->waits[at] != waits) {
        self->waits[at] = (unsigned char)waits;
        self->waiting += waits ? 1 : -1;
    }
    Py_RETURN_NONE;
}

static PyObject *
HeardTable_report(HeardTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t at = slot_of(self, args, nargs, 3, "report(host, app, last)");
    if (at == -2)
        return NULL;
    double last = PyFloat_AsDouble(args[2]);
    if (last == -1.0 && PyErr_Occurred())
        return NULL;
    if (at < 0)
        Py_RETURN_FALSE;
    double before = self->slots[at].last;
    if (isnan(before) || last > before)
        self->slots[at].last = last;
    Py_RETURN_TRUE;
}

/*
 * Stamp the slots of HASHES (COUNT of them) with NOW; append the key of
 * each that waits to WOKEN.  Every entry with a message's hash is stamped,
 * so that two identities of one hash both are (see the module's docstring).
 */
static int
stamp(HeardTable *self, const uint64_t *hashes, int count, double now, PyObject *woken)
{
    size_t mask = (size_t)self->capacity - 1;
    Slot *slots = self->slots;
    for (int n = 0; n < count && n < AHEAD; n++)
        __builtin_prefetch(&slots[(size_t)hashes[n] & mask], 1);
    for (int n = 0; n < count; n++) {
        if (n + AHEAD < count)
            __builtin_prefetch(&slots[(size_t)hashes[n + AHEAD] & mask], 1);
        uint64_t hash = hashes[n];
        for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
            uint64_t found = slots[i].hash;
            if (found == EMPTY)
                break;
            if (found != hash)
                continue;
            slots[i].last = now;
            if (self->waiting && self->waits[i] && PyList_Append(woken, self->keys[i]) < 0)
                return -1;
        }
    }
    return 0;
}

/* Run RUN's hashes through stamp when full (PENDING: how many). */
#define PUSH(hash)                                                           \
    do {                                                                     \
        run[pending++] = (hash);                                             \
        if (pending == RUN) {                                                \
            if (stamp(self, run, pending, now, woken) < 0)                   \
                goto error;                                                  \
            pending = 0;                                                     \
        }                                                                    \
    } while (0)

/*
 * heard(messages, address, now, hashes=None) -> list: MESSAGES, a sequence
 * of (priority, hostname, app) tuples or None, from ADDRESS; HASHES, when
 * given, 16 bytes for each (its hostname's and its app's hashes with this
 * table's seed, native order, 0 for none: suite/foundation/heard.py): then
 * the messages are not read, and may be None.
 */
static PyObject *
HeardTable_heard(HeardTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "heard(messages, address, now, hashes=None)");
        return NULL;
    }
    PyObject *address = args[1];
    PyObject *given = nargs == 4 ? args[3] : Py_None;
    double now = PyFloat_AsDouble(args[2]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (!PyUnicode_Check(address) || (given != Py_None && !PyBytes_Check(given))) {
        PyErr_SetString(PyExc_TypeError, "heard(sequence, str, float, bytes or None)");
        return NULL;
    }
    PyObject *messages = NULL, *woken = PyList_New(0);
    if (woken == NULL || self->used == 0)
        return woken;
    if (given == Py_None) {
        messages = PySequence_Fast(args[0], "heard: messages is a sequence");
        if (messages == NULL)
            goto error;
    }
    /* The sender's address is matched only when some entry's host is that address. */
    uint64_t address_hash = 0;
    int by_address = PyDict_Contains(self->hosts, address);
    if (by_address < 0 || (by_address && (address_hash = hash_host(self, address)) == 0))
        goto error;

    uint64_t run[RUN];
    int pending = 0;
    if (given != Py_None) {
        Py_ssize_t count = PyBytes_GET_SIZE(given) / 16;
        if (PyBytes_GET_SIZE(given) % 16 != 0 ||
            (args[0] != Py_None && PyObject_Length(args[0]) != count)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "heard: 16 bytes of hashes a message");
            goto error;
        }
        const char *hashes = PyBytes_AS_STRING(given);
        for (Py_ssize_t n = 0; n < count; n++) {
            uint64_t host_hash, app_hash;
            memcpy(&host_hash, hashes + 16 * n, 8);
            memcpy(&app_hash, hashes + 16 * n + 8, 8);
            if (app_hash == 0)
                continue; /* no app (or not syslog): nobody's */
            if (host_hash != 0)
                PUSH(suite_identity(host_hash, app_hash));
            if (by_address)
                PUSH(suite_identity(address_hash, app_hash));
        }
    } else {
        Py_ssize_t count = PySequence_Fast_GET_SIZE(messages);
        PyObject **items = PySequence_Fast_ITEMS(messages);
        PyObject *hostname = NULL; /* of the message before, borrowed */
        uint64_t host_hash = 0;
        for (Py_ssize_t n = 0; n < count; n++) {
            PyObject *fields = items[n];
            if (fields == Py_None)
                continue;
            if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != 3) {
                PyErr_SetString(PyExc_TypeError, "heard: a message is (priority, hostname, app)");
                goto error;
            }
            PyObject *app = PyTuple_GET_ITEM(fields, 2);
            if (!PyUnicode_Check(app))
                continue; /* None: no app, nobody's */
            PyObject *this_hostname = PyTuple_GET_ITEM(fields, 1);
            if (this_hostname != hostname) {
                /* a read mostly holds one host's messages: compare before hashing again */
                int same = hostname != NULL && PyUnicode_Check(this_hostname) &&
                           PyUnicode_Check(hostname) && same_text(this_hostname, hostname);
                if (!same) {
                    host_hash = 0;
                    if (PyUnicode_Check(this_hostname) &&
                        (host_hash = hash_host(self, this_hostname)) == 0)
                        goto error;
                }
                hostname = this_hostname;
            }
            uint64_t app_hash = hash_app(self, app);
            if (app_hash == 0)
                goto error;
            if (host_hash != 0)
                PUSH(suite_identity(host_hash, app_hash));
            if (by_address)
                PUSH(suite_identity(address_hash, app_hash));
        }
    }
    if (stamp(self, run, pending, now, woken) < 0)
        goto error;
    Py_XDECREF(messages);
    return woken;
error:
    Py_XDECREF(messages);
    Py_XDECREF(woken);
    return NULL;
}

static Py_ssize_t
HeardTable_length(HeardTable *self)
{
    return self->used;
}

static int
HeardTable_init(HeardTable *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"seed", NULL};
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "K:HeardTable", names, &seed))
        return -1;
    self->seed = (uint64_t)seed;
    release(self);
    if (self->hosts == NULL && (self->hosts = PyDict_New()) == NULL)
        return -1;
    PyDict_Clear(self->hosts);
    return 0;
}

static void
HeardTable_dealloc(HeardTable *self)
{
    release(self);
    Py_CLEAR(self->hosts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef HeardTable_methods[] = {
    {"add", (PyCFunction)(void (*)(void))HeardTable_add, METH_FASTCALL, NULL},
    {"remove", (PyCFunction)(void (*)(void))HeardTable_remove, METH_FASTCALL, NULL},
    {"clear", (PyCFunction)HeardTable_clear, METH_NOARGS, NULL},
    {"keys", (PyCFunction)HeardTable_keys, METH_NOARGS, NULL},
    {"last", (PyCFunction)(void (*)(void))HeardTable_last, METH_FASTCALL, NULL},
    {"wait", (PyCFunction)(void (*)(void))HeardTable_wait, METH_FASTCALL, NULL},
    {"report", (PyCFunction)(void (*)(void))HeardTable_report, METH_FASTCALL, NULL},
    {"heard", (PyCFunction)(void (*)(void))HeardTable_heard, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods HeardTable_as_sequence = {
    .sq_length = (lenfunc)HeardTable_length,
};

static PyTypeObject HeardTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "suite.names._heard_table.HeardTable",
    .tp_doc = "HeardTable(seed): the heard table (suite/names/heard_table.py)",
    .tp_basicsize = sizeof(HeardTable),
    .tp_flags = Py_TPFLAGS_DEFAULT, /* it holds str and int alone: no cycle to collect */
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HeardTable_init,
    .tp_dealloc = (destructor)HeardTable_dealloc,
    .tp_methods = HeardTable_methods,
    .tp_as_sequence = &HeardTable_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "suite.names._heard_table",
    .m_doc = "The heard table of logs checks in C (suite/names/heard_table.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__heard_table(void)
{
    if (PyType_Ready(&HeardTableType) < 0)
        return NULL;
    PyObject *created = PyModule_Create(&module);
    if (created == NULL)
        return NULL;
    Py_INCREF(&HeardTableType);
    if (PyModule_AddObject(created, "HeardTable", (PyObject *)&HeardTableType) < 0) {
        Py_DECREF(&HeardTableType);
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
