/* Compiled masking for tether.sansio.masking (RFC 6455 section 5.3).
 *
 * 5.3: "Octet i of the transformed data is the XOR of octet i of the original data with octet
 * at index i modulo 4 of the masking key." The same operation masks and unmasks.
 *
 * This module is optional. masking.py imports it when it was built (and TETHER_NO_SPEEDUPS is
 * not set) and otherwise uses its pure-Python functions, which take the same arguments, return
 * the same results and raise the same exception types for the documented argument types; the
 * tests run both. See masking.py for what each function is for.
 *
 * How: the key repeated twice is one 8-byte word, and since 8 is a multiple of 4, each group of
 * 8 bytes at offsets 8k..8k+7 of the payload meets exactly that word. We XOR word by word and
 * finish the last 0-7 bytes one at a time. Loads and stores go through memcpy, so the data may sit at any address
 * (no unaligned access, no type punning); compilers turn those memcpy calls into plain moves,
 * and at -O3 (CPython's default flags) into vector instructions. Portable C99, no intrinsics.
 *
 * The GIL is released while large payloads are masked (see RELEASE_GIL_SIZE). While it is
 * released we only touch memory we hold buffer exports for (a bytearray with an export cannot
 * be resized) or the bytes object we are building, which nobody else can see yet.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Payloads of at least this many bytes (about 80 us of work) are masked with the GIL released,
 * so that other threads run Python meanwhile and several threads can mask on several cores.
 * It is not free: when another thread is busy, the thread that let go of the GIL waits to get
 * it back, which for an event loop thread is added latency. Measured with a second thread
 * running a Python loop (CPython 3.11, 2 busy cores), releasing for 64 KiB - 4 MiB payloads cost
 * the masking thread 35-50% of its calls and gave about as much to the other thread; two
 * threads masking 1 MiB payloads got no more done together either way. So we keep the GIL for small and
 * medium payloads, where the pause we would save other threads is short next to the 5 ms
 * switch interval, and release it only for large ones. */
#define RELEASE_GIL_SIZE (1024 * 1024)

/* XOR n bytes of src with the key repeated, into dst. dst may be src (masking in place) but must
 * not overlap it otherwise. phase is the index in the key of the first byte: 0 unless this is
 * the continuation of a longer payload. */
static void
xor_with_key(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
             const unsigned char key[4], Py_ssize_t phase)
{
    unsigned char key8[8];
    uint64_t key_word, word;
    Py_ssize_t i;

    for (i = 0; i < 8; i++) {
        key8[i] = key[(phase + i) & 3];
    }
    memcpy(&key_word, key8, 8);
    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&word, src + i, 8);
        word ^= key_word;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ key8[i & 7];
    }
}

/* Release the GIL if a payload of n bytes is worth it; returns what end_large_work needs. */
static PyThreadState *
begin_large_work(Py_ssize_t n)
{
    return n >= RELEASE_GIL_SIZE ? PyEval_SaveThread() : NULL;
}

static void
end_large_work(PyThreadState *state)
{
    if (state != NULL) {
        PyEval_RestoreThread(state);
    }
}

/* Raise TypeError unless min <= nargs <= max, with the wording of a Python function. */
static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs < min || nargs > max) {
        if (min == max) {
            PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given",
                         name, max, nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes from %zd to %zd positional arguments but %zd were given",
                         name, min, max, nargs);
        }
        return -1;
    }
    return 0;
}

/* Copy a masking key out of any bytes-like object; ValueError unless it is 4 bytes long. */
static int
read_key(PyObject *obj, unsigned char key[4])
{
    Py_buffer view;

    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes, got %zd", view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(key, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /)\n--\n\n"
"Return data XORed with the 4-byte mask repeated (RFC 6455 5.3), as bytes.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer data;
    PyObject *result;

    if (check_nargs("apply_mask", nargs, 2, 2) < 0 || read_key(args[1], key) < 0) {
        return NULL;
    }
    /* PyBUF_SIMPLE: C-contiguous bytes, whatever the item type (a memoryview of 4-byte items is
     * masked as its raw bytes, as in masking.py). Non-contiguous views raise BufferError. */
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        PyThreadState *state = begin_large_work(data.len);
        xor_with_key((unsigned char *)PyBytes_AS_STRING(result), data.buf, data.len, key, 0);
        end_large_work(state);
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(mask_in_place_doc,
"mask_in_place(buf, mask, start=0, /)\n--\n\n"
"XOR buf[start:] with the 4-byte mask repeated, in place; buf is any writable buffer.");

static PyObject *
mask_in_place(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer buf;
    Py_ssize_t start = 0;
    unsigned char *first;
    PyThreadState *state;

    if (check_nargs("mask_in_place", nargs, 2, 3) < 0 || read_key(args[1], key) < 0) {
        return NULL;
    }
    if (nargs == 3) {
        /* An index too large for Py_ssize_t is out of range anyway: ValueError, as below. */
        start = PyNumber_AsSsize_t(args[2], PyExc_ValueError);
        if (start == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (start < 0 || start > buf.len) {
        PyErr_Format(PyExc_ValueError, "start must be between 0 and %zd, got %zd", buf.len, start);
        PyBuffer_Release(&buf);
        return NULL;
    }
    first = (unsigned char *)buf.buf + start;
    state = begin_large_work(buf.len - start);
    xor_with_key(first, first, buf.len - start, key, 0);
    end_large_work(state);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(join_masked_doc,
"join_masked(parts, mask, prefix=b'', /)\n--\n\n"
"Return prefix followed by the concatenation of parts XORed with the 4-byte mask repeated.\n\n"
"The key runs on across parts (byte i of the joined parts meets mask[i % 4]); prefix is\n"
"copied as it is. One allocation, one pass over the data.");

static PyObject *
join_masked(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer prefix;
    Py_buffer *views = NULL;
    PyObject *seq = NULL, *result = NULL;
    Py_ssize_t count, got = 0, total, i, pos;
    unsigned char *out;
    PyThreadState *state;

    if (check_nargs("join_masked", nargs, 2, 3) < 0 || read_key(args[1], key) < 0) {
        return NULL;
    }
    if (nargs == 3) {
        if (PyObject_GetBuffer(args[2], &prefix, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
    }
    else {
        /* An empty prefix; PyBuffer_Release on it below is a no-op (obj is NULL). */
        if (PyBuffer_FillInfo(&prefix, NULL, "", 0, 1, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
    }

    /* Take a buffer export of every part before allocating: we need the total length, and the
     * exports keep the parts alive and unresizable while the GIL is released. */
    seq = PySequence_Fast(args[0], "parts must be an iterable of bytes-like objects");
    if (seq == NULL) {
        goto done;
    }
    count = PySequence_Fast_GET_SIZE(seq);
    views = PyMem_New(Py_buffer, count > 0 ? count : 1);
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    total = prefix.len;
    for (got = 0; got < count; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got],
                               PyBUF_SIMPLE) < 0) {
            goto done;
        }
        if (views[got].len > PY_SSIZE_T_MAX - total) {
            PyBuffer_Release(&views[got]);
            PyErr_NoMemory();
            goto done;
        }
        total += views[got].len;
    }

    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        goto done;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    if (prefix.len > 0) {
        memcpy(out, prefix.buf, prefix.len);
    }
    out += prefix.len;
    /* pos counts payload bytes, so part i starts at key index pos % 4. */
    state = begin_large_work(total - prefix.len);
    for (i = 0, pos = 0; i < count; pos += views[i].len, i++) {
        xor_with_key(out + pos, views[i].buf, views[i].len, key, pos & 3);
    }
    end_large_work(state);

done:
    if (views != NULL) {
        for (i = 0; i < got; i++) {
            PyBuffer_Release(&views[i]);
        }
        PyMem_Free(views);
    }
    Py_XDECREF(seq);
    PyBuffer_Release(&prefix);
    return result;
}

PyDoc_STRVAR(mask_into_doc,
"mask_into(buf, start, data, mask, /)\n--\n\n"
"Write data XORed with the 4-byte mask repeated into buf[start:start + len(data)], in one\n"
"pass; buf is any writable buffer, data any bytes-like object.");

static PyObject *
mask_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer buf, data;
    Py_ssize_t start;
    PyThreadState *state;

    if (check_nargs("mask_into", nargs, 4, 4) < 0 || read_key(args[3], key) < 0) {
        return NULL;
    }
    start = PyNumber_AsSsize_t(args[1], PyExc_ValueError);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (start < 0 || start > buf.len || data.len > buf.len - start) {
        PyErr_Format(PyExc_ValueError, "%zd bytes do not fit at %zd in a buffer of %zd",
                     data.len, start, buf.len);
        PyBuffer_Release(&data);
        PyBuffer_Release(&buf);
        return NULL;
    }
    state = begin_large_work(data.len);
    xor_with_key((unsigned char *)buf.buf + start, data.buf, data.len, key, 0);
    end_large_work(state);
    PyBuffer_Release(&data);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

/* --- a bytes object filled in place ---------------------------------------------------------
 *
 * new_payload(n) returns (payload, view): a new bytes object of n bytes, not initialised, and
 * a writable memoryview of its n bytes. The frame parser hands the view to the transport's
 * recv_into() (asyncio's BufferedProtocol), so that a large frame is read straight into the
 * bytes object the application receives: no copy out of a read buffer, no join of the pieces,
 * one allocation. This is how CPython's own code fills bytes it creates
 * (PyBytes_FromStringAndSize(NULL, n), then writes), spread over several reads: the parser
 * never lets the payload out before every byte is written, and drops (releases) the view
 * before it does. The view keeps the payload alive through the exporter below. */

typedef struct {
    PyObject_HEAD
    PyObject *payload; /* the bytes object being filled */
} FillerObject;

static int
filler_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    PyObject *payload = ((FillerObject *)self)->payload;
    return PyBuffer_FillInfo(view, self, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                             0, flags);
}

static void
filler_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    Py_XDECREF(((FillerObject *)self)->payload);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyType_Slot filler_slots[] = {
    {Py_bf_getbuffer, filler_getbuffer},
    {Py_tp_dealloc, filler_dealloc},
    {0, NULL},
};

static PyType_Spec filler_spec = {
    .name = "tether.sansio._speedups._Filler",
    .basicsize = sizeof(FillerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = filler_slots,
};

PyDoc_STRVAR(new_payload_doc,
"new_payload(size, /)\n--\n\n"
"Return (payload, view): a new bytes object of size bytes (size > 1), its contents not\n"
"initialised, and a writable memoryview of them, to fill before payload is used.");

static PyObject *
new_payload(PyObject *module, PyObject *arg)
{
    PyTypeObject *type = *(PyTypeObject **)PyModule_GetState(module);
    Py_ssize_t size = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    PyObject *payload, *view, *result;
    FillerObject *filler;

    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 2) {
        /* bytes of length 0 and 1 are shared singletons: never write into those. */
        PyErr_Format(PyExc_ValueError, "size must be at least 2, got %zd", size);
        return NULL;
    }
    if (type == NULL) {
        PyErr_SetString(PyExc_SystemError, "_speedups module state is missing");
        return NULL;
    }
    payload = PyBytes_FromStringAndSize(NULL, size);
    if (payload == NULL) {
        return NULL;
    }
    filler = PyObject_New(FillerObject, type);
    if (filler == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    /* PyObject_New took a reference to the heap type (dropped in filler_dealloc). */
    Py_INCREF(payload);
    filler->payload = payload;
    view = PyMemoryView_FromObject((PyObject *)filler);
    Py_DECREF(filler); /* the view holds the exporter */
    if (view == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    result = PyTuple_Pack(2, payload, view);
    Py_DECREF(payload);
    Py_DECREF(view);
    return result;
}

static int
speedups_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &filler_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    *(PyObject **)PyModule_GetState(module) = type;
    return 0;
}

static int
speedups_traverse(PyObject *module, visitproc visit, void *arg)
{
    PyObject **state = PyModule_GetState(module);
    if (state != NULL) {
        Py_VISIT(*state);
    }
    return 0;
}

static int
speedups_clear(PyObject *module)
{
    PyObject **state = PyModule_GetState(module);
    if (state != NULL) {
        Py_CLEAR(*state);
    }
    return 0;
}

static void
speedups_free(void *module)
{
    speedups_clear((PyObject *)module);
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"mask_in_place", (PyCFunction)(void (*)(void))mask_in_place, METH_FASTCALL,
     mask_in_place_doc},
    {"join_masked", (PyCFunction)(void (*)(void))join_masked, METH_FASTCALL, join_masked_doc},
    {"mask_into", (PyCFunction)(void (*)(void))mask_into, METH_FASTCALL, mask_into_doc},
    {"new_payload", (PyCFunction)new_payload, METH_O, new_payload_doc},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase initialisation (PEP 489); the one heap type lives in the module state, so
 * the module stays safe in subinterpreters. */
static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tether.sansio._speedups",
    .m_doc = "Compiled masking for tether.sansio.masking; see masking.py.",
    .m_size = sizeof(PyObject *),
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
    .m_traverse = speedups_traverse,
    .m_clear = speedups_clear,
    .m_free = speedups_free,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
