"""
End-to-end tests: real twistd and suite-client processes.

Some of them interrupt those processes with SIGINT, as a person pressing
Ctrl-C would.  A shell that starts the tests in the background without job
control (`nohup make test &` in a script) starts them with SIGINT ignored,
every process they start would inherit that, and Python and Twisted both
leave an ignored SIGINT ignored; so the tests give their processes Python's
own SIGINT handling back (which exec resets to the default).
"""

import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
