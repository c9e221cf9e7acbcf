/*
 * The heard table in C: suite/names/heard_table.py describes it, and its
 * HeardDicts is the reference the tests hold this to.
 *
 * One open-addressed array of 8-byte slots, at most half full, probed
 * linearly from the slot the tag names: a slot is an identity's tag (the
 * top 40 bits of its hash, suite/foundation/identity_hash.h, the hash the
 * collector's parser computes too) and the sixteenth of a second it was
 * last heard in (a tick, the low 24 bits).  A table of 10,000 identities
 * is 256 KiB (a third full: fuller, the probes that run on to an empty
 * slot cost more than the memory saved).  A message reads its slot and
 * writes it only when its tick changed, at most 16 times a second per
 * identity: a collector streaming records keeps few of these lines in its
 * caches and makes fewer of them dirty.  Beside the slots, touched only then and by the name server's
 * own calls: when each was last heard (the first message of its latest
 * tick: a sixteenth of a second at most before the last message), its
 * (host form, app) tuple, and whether it waits.
 *
 * A slot is 0 when empty and 1 when its entry was removed (a tombstone,
 * skipped by probes, reused by additions, gone at the next resize); a tag
 * is never 0.  Ticks wrap every 2**24 / 16 s (12 days): once an hour the
 * slots not heard for a day lose their tick (NO_TICK), so that a source
 * heard again after exactly a wrap is not taken for one heard in the same
 * tick.
 *
 * HeardTable.heard hashes a read's messages (or takes the hashes the
 * parser made) in runs of RUN and probes each run with the slots of the
 * AHEAD next asked for from memory meanwhile.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../foundation/identity_hash.h"

#define EMPTY 0
#define REMOVED 1
#define TICK_BITS 24
#define TICK_MASK ((UINT64_C(1) << TICK_BITS) - 1)
#define TAG_MASK (~TICK_MASK)
#define TICKS_PER_SECOND 16.0
#define NO_TICK 0             /* not heard in a tick the slot remembers */
#define SWEEP_SECONDS 3600.0  /* how often slots not heard for FORGET_SECONDS lose their tick */
#define FORGET_SECONDS 86400.0
#define MIN_CAPACITY 16
#define RUN 256 /* hashes probed together */
#define AHEAD 16 /* slots asked for ahead of their probe */

typedef struct {
    PyObject_HEAD
    uint64_t *slots;         /* tag | tick; EMPTY or REMOVED */
    double *lasts;           /* when each was last heard; NAN: not since added */
    PyObject **keys;         /* (host, app) of each slot in use, owned */
    unsigned char *waits;    /* whether hearing each slot is told */
    Py_ssize_t capacity;     /* a power of two, or 0 */
    Py_ssize_t used;         /* entries */
    Py_ssize_t filled;       /* entries and tombstones */
    Py_ssize_t waiting;      /* entries that wait */
    uint64_t seed;
    double swept;            /* when slots last lost their old ticks */
    PyObject *hosts;         /* host form -> how many entries have it (int) */
} HeardTable;

/* The tag of an identity's hash: its top 40 bits, never 0. */
static inline uint64_t
tag_of(uint64_t hash)
{
    uint64_t tag = hash & TAG_MASK;
    return tag ? tag : (UINT64_C(1) << TICK_BITS);
}

/* The slot a probe for TAG starts at. */
static inline size_t
home(uint64_t tag, size_t mask)
{
    return (size_t)(tag >> TICK_BITS) & mask;
}

/* The tick NOW is in: 1 .. 2**24 - 1 (NO_TICK is none). */
static inline uint64_t
tick_of(double now)
{
    double ticks = floor((now > 0 ? now : 0) * TICKS_PER_SECOND);
    return (uint64_t)fmod(ticks, (double)TICK_MASK) + 1;
}

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

/* The tag of (HOST, APP), into *TAG. */
static int
key_tag(HeardTable *self, PyObject *host, PyObject *app, uint64_t *tag)
{
    if (!PyUnicode_Check(host) || !PyUnicode_Check(app)) {
        PyErr_SetString(PyExc_TypeError, "host and app are str");
        return -1;
    }
    uint64_t host_hash = hash_host(self, host), app_hash = host_hash ? hash_app(self, app) : 0;
    if (app_hash == 0)
        return -1;
    *tag = tag_of(suite_identity(host_hash, app_hash));
    return 0;
}

/* The slot of (HOST, APP) with tag TAG, -1 when absent, -2 on error. */
static Py_ssize_t
find(HeardTable *self, uint64_t tag, PyObject *host, PyObject *app)
{
    if (self->capacity == 0)
        return -1;
    size_t mask = (size_t)self->capacity - 1;
    for (size_t i = home(tag, mask);; i = (i + 1) & mask) {
        uint64_t found = self->slots[i];
        if (found == EMPTY)
            return -1;
        if ((found & TAG_MASK) == tag) {
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
    uint64_t *slots = PyMem_Calloc((size_t)capacity, sizeof(uint64_t));
    double *lasts = PyMem_Calloc((size_t)capacity, sizeof(double));
    PyObject **keys = PyMem_Calloc((size_t)capacity, sizeof(PyObject *));
    unsigned char *waits = PyMem_Calloc((size_t)capacity, 1);
    if (slots == NULL || lasts == NULL || keys == NULL || waits == NULL) {
        PyMem_Free(slots);
        PyMem_Free(lasts);
        PyMem_Free(keys);
        PyMem_Free(waits);
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)capacity - 1;
    for (Py_ssize_t old = 0; old < self->capacity; old++) {
        uint64_t slot = self->slots[old];
        if (slot <= REMOVED)
            continue;
        size_t i = home(slot & TAG_MASK, mask);
        while (slots[i] != EMPTY)
            i = (i + 1) & mask;
        slots[i] = slot;
        lasts[i] = self->lasts[old];
        keys[i] = self->keys[old];
        waits[i] = self->waits[old];
    }
    PyMem_Free(self->slots);
    PyMem_Free(self->lasts);
    PyMem_Free(self->keys);
    PyMem_Free(self->waits);
    self->slots = slots;
    self->lasts = lasts;
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
    uint64_t tag;
    if (key_tag(self, host, app, &tag) < 0)
        return NULL;
    Py_ssize_t at = find(self, tag, host, app);
    if (at == -2)
        return NULL;
    if (at >= 0) {
        self->slots[at] = tag | NO_TICK;
        self->lasts[at] = NAN;
        Py_RETURN_NONE;
    }
    if ((self->filled + 1) * 2 > self->capacity) {
        Py_ssize_t capacity = MIN_CAPACITY;
        while (capacity < (self->used + 1) * 2)
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
    size_t i = home(tag, mask);
    while (self->slots[i] > REMOVED)
        i = (i + 1) & mask;
    if (self->slots[i] == EMPTY)
        self->filled++;
    self->slots[i] = tag | NO_TICK;
    self->lasts[i] = NAN;
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
    uint64_t tag;
    if (key_tag(self, args[0], args[1], &tag) < 0)
        return -2;
    return find(self, tag, args[0], args[1]);
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
        self->slots[at] = REMOVED;
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
    PyMem_Free(self->lasts);
    PyMem_Free(self->keys);
    PyMem_Free(self->waits);
    self->slots = NULL;
    self->lasts = NULL;
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
    if (at < 0 || isnan(self->lasts[at]))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(self->lasts[at]);
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
    double before = self->lasts[at];
    if (isnan(before) || last > before)
        self->lasts[at] = last;
    Py_RETURN_TRUE;
}

/*
 * Stamp the slots of TAGS (COUNT of them) as heard at NOW, in tick TICK:
 * a slot whose tick is another is given TICK, and NOW as when it was last
 * heard.  The key of each that waits goes to WOKEN.  Every entry with a
 * message's tag is stamped, so that two identities of one tag both are
 * (see suite/names/heard_table.py).
 */
static int
stamp(HeardTable *self, const uint64_t *tags, int count, double now, uint64_t tick,
      PyObject *woken)
{
    size_t mask = (size_t)self->capacity - 1;
    uint64_t *slots = self->slots;
    for (int n = 0; n < count && n < AHEAD; n++)
        __builtin_prefetch(&slots[home(tags[n], mask)], 1);
    for (int n = 0; n < count; n++) {
        if (n + AHEAD < count)
            __builtin_prefetch(&slots[home(tags[n + AHEAD], mask)], 1);
        uint64_t tag = tags[n];
        for (size_t i = home(tag, mask);; i = (i + 1) & mask) {
            uint64_t found = slots[i];
            if (found == EMPTY)
                break;
            if ((found & TAG_MASK) != tag)
                continue;
            if ((found & TICK_MASK) != tick) {
                slots[i] = tag | tick;
                self->lasts[i] = now;
            }
            if (self->waiting && self->waits[i] && PyList_Append(woken, self->keys[i]) < 0)
                return -1;
        }
    }
    return 0;
}

/*
 * Slots not heard for FORGET_SECONDS lose their tick, once every
 * SWEEP_SECONDS (or when the clock went back): none keeps a tick until it
 * wraps.
 */
static void
sweep(HeardTable *self, double now)
{
    if (now - self->swept < SWEEP_SECONDS && now >= self->swept)
        return;
    self->swept = now;
    for (Py_ssize_t i = 0; i < self->capacity; i++) {
        uint64_t slot = self->slots[i];
        double last = self->lasts[i];
        if (slot > REMOVED && (isnan(last) || !(now - last < FORGET_SECONDS)))
            self->slots[i] = (slot & TAG_MASK) | NO_TICK;
    }
}

/* Run RUN's hashes through stamp when full (PENDING: how many). */
#define PUSH(hash)                                                           \
    do {                                                                     \
        run[pending++] = (hash);                                             \
        if (pending == RUN) {                                                \
            if (stamp(self, run, pending, now, tick, woken) < 0)             \
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

    sweep(self, now);
    uint64_t tick = tick_of(now);
    uint64_t run[RUN] = {0};
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
                PUSH(tag_of(suite_identity(host_hash, app_hash)));
            if (by_address)
                PUSH(tag_of(suite_identity(address_hash, app_hash)));
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
                PUSH(tag_of(suite_identity(host_hash, app_hash)));
            if (by_address)
                PUSH(tag_of(suite_identity(address_hash, app_hash)));
        }
    }
    if (stamp(self, run, pending, now, tick, woken) < 0)
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
    self->swept = -INFINITY; /* the first heard sweeps: nothing to do yet */
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
