/* A stand-in for the `ssh` process OpenShell's `forward start --background` leaves running.
 *
 * tests/support/openshell-standin execs this with exactly the argv the real CLI gives ssh
 * (OpenShell crates/openshell-cli/src/ssh.rs `ssh_base_command` + `sandbox_forward`, v0.0.44 and
 * v0.0.72), argv[0] "ssh" included, so /proc/PID/cmdline is byte for byte the real one. Instead of
 * tunnelling it listens on the `-L [BIND:]P:127.0.0.1:P` port itself. With `-f` (0.0.44) it forks
 * once it listens and the parent exits, as ssh does after authenticating. It keeps the stdout and
 * stderr it was given open, as the real ssh does, and exits on SIGTERM like ssh. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *spec = NULL;
    int background = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-L") == 0 && i + 1 < argc) spec = argv[++i];
        else if (strcmp(argv[i], "-f") == 0) background = 1;
    }
    if (!spec) { fprintf(stderr, "fake-ssh: no -L\n"); return 255; }
    char buf[256];
    strncpy(buf, spec, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    /* [BIND:]P:127.0.0.1:P */
    char *parts[4]; int n = 0;
    for (char *p = strtok(buf, ":"); p && n < 4; p = strtok(NULL, ":")) parts[n++] = p;
    const char *bind_addr = n == 4 ? parts[0] : "127.0.0.1";
    int port = atoi(n == 4 ? parts[1] : parts[0]);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, bind_addr, &a.sin_addr) != 1) { fprintf(stderr, "fake-ssh: bad bind %s\n", bind_addr); return 255; }
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
        fprintf(stderr, "bind [%s]:%d: Address already in use\nchannel_setup_fwd_listener_tcpip: cannot listen to port: %d\nCould not request local forwarding.\n", bind_addr, port, port);
        return 255;
    }
    if (background && fork() != 0) return 0;
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c >= 0) close(c);
    }
}
