package netns

// sysSetns is setns(2)'s number; Go's frozen syscall package lacks it on
// amd64 only.
const sysSetns = 308
