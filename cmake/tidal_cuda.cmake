# CUDA toolchain settings: Hopper (sm_90a) unless the user names other architectures.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90a)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
# Debian's CMake 3.25 knows no CUDA20 dialect for nvcc 13, so .cu files are C++17; kernel
# headers stay C++17-clean and everything else is C++20.
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(TIDAL_CUDA_FLAGS --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra)
if(TIDAL_WERROR)
  list(APPEND TIDAL_CUDA_FLAGS -Werror=all-warnings -Xcompiler=-Werror)
endif()
