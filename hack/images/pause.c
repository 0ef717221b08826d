/* Minimal pod sandbox ("pause") process, built with gcc -static.
 * Holds the pod's namespaces; exits 0 on SIGINT/SIGTERM; reaps zombies when it is
 * PID 1 of a shared PID namespace; otherwise sleeps in pause(). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("baton-pause 3.10");
    return 0;
  }
  if (getpid() != 1)
    fprintf(stderr, "pause: warning: not running as PID 1\n");
  struct sigaction term = {.sa_handler = on_term};
  sigemptyset(&term.sa_mask);
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0)
    return 1;
  struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  sigemptyset(&chld.sa_mask);
  if (sigaction(SIGCHLD, &chld, NULL) < 0)
    return 2;
  for (;;)
    pause();
  return 42;
}
