/* The only program of the e2e "no shell" step image (localhost/baton/noshell):
 * prints its arguments, appends "<$REPORT_KEY or said>=<args joined by ->" to
 * $BATON_OUTPUT, and exits 0. Built with gcc -static: the image holds nothing
 * else, no shell, no libc, no base64. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  const char *key = getenv("REPORT_KEY");
  const char *out = getenv("BATON_OUTPUT");
  printf("report:");
  for (int i = 1; i < argc; i++) printf(" %s", argv[i]);
  printf("\n");
  if (out == NULL) return 0;
  FILE *f = fopen(out, "a");
  if (f == NULL) { perror(out); return 70; }
  fprintf(f, "%s=", key ? key : "said");
  for (int i = 1; i < argc; i++) fprintf(f, "%s%s", i > 1 ? "-" : "", argv[i]);
  fprintf(f, "\n");
  return fclose(f) == 0 ? 0 : 71;
}
