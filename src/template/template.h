/* libfaasvisor-template's entry points (template.c; docs/templates.md). C only. */
#ifndef FAASVISOR_TEMPLATE_H
#define FAASVISOR_TEMPLATE_H

#define FV_TEMPLATE_NAMESPACES 5

int fv_template_enter(const int *ns, const char *directory);
void fv_template_wait(int function_pid, int sock);
int fv_template_await_start(char *name, int capacity);
int fv_template_finish(int sock);
/* A whole template loop for a C program (the function SDK): returns 0 in each forked
 * instance (then serve as usual), 1 once the node has closed the control socket, or a
 * negative errno. `runtime` is the READY text sent to the node (at most 64 bytes). */
int fv_template_run(int ctl_fd, const char *runtime);

#endif
