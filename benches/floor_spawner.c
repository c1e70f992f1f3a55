/*
 * The floor of W1 on a machine (BENCHMARKS.md): T threads posix_spawn N copies of the benchmark's
 * child, each with a fresh log file as stdout and stderr and a process group of its own, and the time
 * from the first spawn until every child has reported from the top of main() is printed (with when
 * the first and the middle one reported, as the scale benchmark prints for W1). Nothing of
 * a supervisor: no records, no store, no pidfds. Build: cc -O2 -pthread -o spawner floor_spawner.c;
 * run: ./spawner N T CHILD SOCKET LOGDIR [posix|vfork|vfork-pinned] (CHILD is benches/bench_child.c
 * built with cc). The spawn is glibc's posix_spawn by default; `vfork` is what the launcher does (a
 * vfork child that opens its log and execs, on a stack that is not mapped and unmapped per spawn, as
 * glibc's is); `vfork-pinned` also keeps the child on the spawning thread's CPU until its exec (the
 * thread waits for it there), instead of letting the scheduler place it on the other CPU first.
 * A second line gives the latest CLOCK_MONOTONIC stamp the children reported ("last stamp NS"),
 * so that a caller can time from before the spawner's own exec, as W1 times from before the
 * launcher's.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
enum how { POSIX, VFORK, VFORK_PINNED };
static enum how HOW;
static int N, T; static const char *child, *sock, *logdir; static pid_t *pids;
static double now_ms(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static void *spawner(void *arg){
  long k=(long)arg;
  for(int i=k;i<N;i+=T){
    char path[512]; snprintf(path,sizeof path,"%s/c%d.log",logdir,i);
    posix_spawn_file_actions_t fa; posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa,1,path,O_WRONLY|O_CREAT|O_APPEND,0600);
    posix_spawn_file_actions_adddup2(&fa,1,2);
    posix_spawnattr_t at; posix_spawnattr_init(&at); posix_spawnattr_setflags(&at,POSIX_SPAWN_SETPGROUP); posix_spawnattr_setpgroup(&at,0);
    char tag[32]; snprintf(tag,sizeof tag,"f%d",i);
    char *argv[]={(char*)child,(char*)sock,tag,NULL};
    if(HOW==POSIX){
      if(posix_spawn(&pids[i],child,&fa,&at,argv,environ)!=0){perror("spawn");exit(1);}
    } else {
      cpu_set_t all,one; sched_getaffinity(0,sizeof all,&all);
      if(HOW==VFORK_PINNED){ CPU_ZERO(&one); CPU_SET(sched_getcpu(),&one); sched_setaffinity(0,sizeof one,&one); }
      pid_t p=vfork();
      if(p==0){
        if(HOW==VFORK_PINNED) sched_setaffinity(0,sizeof all,&all);
        setpgid(0,0); int f=open(path,O_WRONLY|O_CREAT|O_APPEND,0600);
        if(f<0) _exit(127);
        dup2(f,1); dup2(f,2); if(f>2) close(f);
        execve(child,argv,environ); _exit(127);
      }
      if(p<0){perror("vfork");exit(1);}
      pids[i]=p;
      if(HOW==VFORK_PINNED) sched_setaffinity(0,sizeof all,&all);
    }
    posix_spawn_file_actions_destroy(&fa); posix_spawnattr_destroy(&at);
  }
  return NULL;
}
int main(int argc,char**argv){
  if(argc<6){fprintf(stderr,"usage: spawner N T CHILD SOCKET LOGDIR [posix|vfork|vfork-pinned]\n");return 2;}
  N=atoi(argv[1]); T=atoi(argv[2]); child=argv[3]; sock=argv[4]; logdir=argv[5];
  if(N<1||T<1||T>16){fprintf(stderr,"N must be positive and T from 1 to 16\n");return 2;}
  if(strlen(sock)>=sizeof(((struct sockaddr_un*)0)->sun_path)){fprintf(stderr,"socket path too long\n");return 2;}
  const char *how=argc>6?argv[6]:"posix";
  if(!strcmp(how,"posix")) HOW=POSIX; else if(!strcmp(how,"vfork")) HOW=VFORK;
  else if(!strcmp(how,"vfork-pinned")) HOW=VFORK_PINNED; else {fprintf(stderr,"unknown spawn %s\n",how);return 2;}
  pids=calloc(N,sizeof *pids); double *seen=calloc(N,sizeof *seen);
  if(!pids||!seen){perror("calloc");return 1;}
  int fd=socket(AF_UNIX,SOCK_DGRAM,0); struct sockaddr_un a={.sun_family=AF_UNIX}; strcpy(a.sun_path,sock); unlink(sock);
  if(bind(fd,(void*)&a,sizeof a)){perror("bind");return 1;}
  int rb=8<<20; setsockopt(fd,SOL_SOCKET,SO_RCVBUF,&rb,sizeof rb);
  double t0=now_ms(); pthread_t th[16];
  for(long k=0;k<T;k++) pthread_create(&th[k],NULL,spawner,(void*)k);
  /* The latest stamp a child took itself ("start <pid> <ns> <tag>"), for a caller that times
     from its own clock reading, as the scale benchmark's W1 does. */
  int got=0; char buf[256]; unsigned long long last_stamp=0;
  while(got<N){
    ssize_t n=recv(fd,buf,sizeof buf-1,0);
    if(n>5 && !strncmp(buf,"start",5)){
      buf[n]=0; unsigned long long stamp;
      if(sscanf(buf,"start %*d %llu",&stamp)==1 && stamp>last_stamp) last_stamp=stamp;
      seen[got++]=now_ms()-t0;
    }
  }
  double t1=now_ms();
  for(int k=0;k<T;k++) pthread_join(th[k],NULL);
  printf("N=%d T=%d %s all alive %.1f ms (first child at %.1f ms, half at %.1f, last at %.1f)\n",
         N,T,how,t1-t0,seen[0],seen[(N-1)/2],seen[N-1]);
  printf("last stamp %llu\n",last_stamp); fflush(stdout); close(fd); unlink(sock);
  for(int i=0;i<N;i++) kill(pids[i],SIGTERM);
  for(int i=0;i<N;i++) waitpid(pids[i],NULL,0);
  return 0;
}
