#include <stdio.h>
int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "usage: attnedit COMMAND ...\n");
    return 2;
}
