package seccomp

// CgoBuild tells the external tests which openat rule the filter has.
const CgoBuild = cgoBuild
