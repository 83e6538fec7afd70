"""`rabit_run` and `wait_hostname_resolution` as the XGBoost image's scripts call them, on one host.

The image starts a rabit tracker on the first host and trains inside a rabit cluster when more than one host has
data; with one host holding data it calls the training function directly (is_master=True), which is all one
machine can do. More than one host is refused in words: the local backend runs one instance.
"""

import logging
import socket


def _one_host(hosts, current_host):
    if len(hosts) > 1:
        raise RuntimeError("rabit_run: the local backend runs one host, not %d (%s); run multi-host jobs on "
                           "SageMaker" % (len(hosts), ", ".join(hosts)))
    if hosts and current_host not in hosts:
        raise RuntimeError("rabit_run: current host %r is not among the hosts %r" % (current_host, hosts))


def rabit_run(exec_fun, args, include_in_training, hosts, current_host, first_port=None, second_port=None,
              max_connect_attempts=None, connect_retry_timeout=3, update_rabit_args=False):
    """Call `exec_fun(**args)` as the image does when one host has data; None, as the image returns."""
    _one_host(list(hosts), current_host)
    if not include_in_training:
        raise RuntimeError("No hosts received training data.")
    if update_rabit_args:
        args["is_master"] = True
    exec_fun(**args)


def wait_hostname_resolution(sm_hosts):
    """Every host must resolve; here the only one is this machine's name for itself in the job."""
    for host in sm_hosts:
        try:
            socket.gethostbyname(host)
        except socket.gaierror:
            logging.info("host %s does not resolve on this machine; the local backend runs one host", host)
