/*
 * Who logged, as 64-bit hashes: the collector's parser (suite/logger/_speedups.c)
 * hashes each message's hostname and app while their bytes are at hand, and
 * the logs checks' heard table (suite/names/_heard_table.c) finds its entries
 * by the same hashes, so that a watched source costs a message no string.
 * Both include this one definition; suite/foundation/heard.py says which
 * seed a process uses.
 *
 * A hostname is hashed as its str.lower() (the ASCII letters lowered here;
 * other text by Python), an app as it is; a hash is never 0, which stands
 * for "none" (a message without hostname or app).  The function is a seeded
 * multiply-and-fold over 8-byte words: fast on the short strings syslog
 * fields are, and with a seed drawn per process, not one a sender can aim
 * collisions at ahead of time.
 */

#ifndef SUITE_IDENTITY_HASH_H
#define SUITE_IDENTITY_HASH_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SUITE_K0 0xa0761d6478bd642fULL
#define SUITE_K1 0xe7037ed1a0b428dbULL
#define SUITE_K2 0x8ebc6af09c88c6e3ULL

/* 64 x 64 -> 128-bit multiply, folded: the mixing step. */
static inline uint64_t
suite_fold(uint64_t a, uint64_t b)
{
    __uint128_t product = (__uint128_t)a * b;
    return (uint64_t)product ^ (uint64_t)(product >> 64);
}

/* TEXT's hash (never 0), ASCII letters lowered when LOWER. */
static inline uint64_t
suite_hash_text(const unsigned char *text, Py_ssize_t length, uint64_t seed, int lower)
{
    uint64_t hash = seed ^ ((uint64_t)length * SUITE_K0);
    while (length > 0) {
        unsigned char word[8] = {0};
        Py_ssize_t take = length < 8 ? length : 8;
        memcpy(word, text, (size_t)take);
        if (lower)
            for (Py_ssize_t i = 0; i < take; i++)
                if (word[i] >= 'A' && word[i] <= 'Z')
                    word[i] += 'a' - 'A';
        uint64_t value;
        memcpy(&value, word, 8);
        hash = suite_fold(hash ^ value ^ SUITE_K1, SUITE_K2 ^ (uint64_t)take);
        text += take;
        length -= take;
    }
    hash = suite_fold(hash ^ SUITE_K0, SUITE_K1);
    return hash ? hash : 1;
}

/* The hash of the str STR as a hostname (LOWER) or an app; 0 with an exception set. */
static inline uint64_t
suite_hash_str(PyObject *str, uint64_t seed, int lower)
{
    Py_ssize_t length;
    if (PyUnicode_IS_COMPACT_ASCII(str)) {
        length = PyUnicode_GET_LENGTH(str);
        return suite_hash_text((const unsigned char *)PyUnicode_DATA(str), length, seed, lower);
    }
    PyObject *text = lower ? PyObject_CallMethod(str, "lower", NULL) : (Py_INCREF(str), str);
    if (text == NULL)
        return 0;
    uint64_t hash = 0;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &length);
    if (utf8 != NULL) {
        hash = suite_hash_text((const unsigned char *)utf8, length, seed, 0);
    } else if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        /* lone surrogates (bytes a sender's text could not decode): hashed as they are */
        PyErr_Clear();
        PyObject *bytes = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
        if (bytes != NULL) {
            hash = suite_hash_text((const unsigned char *)PyBytes_AS_STRING(bytes),
                                   PyBytes_GET_SIZE(bytes), seed, 0);
            Py_DECREF(bytes);
        }
    }
    Py_DECREF(text);
    return hash;
}

/* The hash of one identity (a host form and an app) from theirs: never 0 or 1. */
static inline uint64_t
suite_identity(uint64_t host, uint64_t app)
{
    uint64_t hash = suite_fold(host ^ SUITE_K2, app ^ SUITE_K0);
    return hash > 1 ? hash : hash + 2;
}

#endif
