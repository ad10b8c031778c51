package cuda

// driverSymbols lists the functions of driver_table.h's table in order. Explicit ABI
// versions (_v2): the unversioned names are macros in cuda.h (ARCHITECTURE.md).
var driverSymbols = []string{
	"cuInit",
	"cuDriverGetVersion",
	"cuDeviceGetCount",
	"cuDeviceGet",
	"cuDeviceGetName",
	"cuDeviceGetAttribute",
	"cuDevicePrimaryCtxRetain",
	"cuCtxSetCurrent",
	"cuCtxSynchronize",
	"cuMemAlloc_v2",
	"cuMemFree_v2",
	"cuMemGetInfo_v2",
	"cuMemcpyHtoDAsync_v2",
	"cuMemcpyDtoHAsync_v2",
	"cuMemcpyDtoDAsync_v2",
	"cuMemsetD8Async",
	"cuStreamCreate",
	"cuStreamDestroy_v2",
	"cuStreamSynchronize",
	"cuStreamQuery",
	"cuEventCreate",
	"cuEventDestroy_v2",
	"cuEventRecord",
	"cuEventSynchronize",
	"cuEventElapsedTime",
	"cuModuleLoadData",
	"cuModuleGetFunction",
	"cuModuleUnload",
	"cuLaunchKernel",
	"cuGetErrorName",
	"cuStreamWaitEvent",
}

// graphSymbols are the CUDA graph functions of driver_table.h's second table, in order:
// optional, so that a driver without them still loads (Driver.Graphs reports them).
var graphSymbols = []string{
	"cuStreamBeginCapture_v2", "cuStreamEndCapture", "cuGraphInstantiateWithFlags",
	"cuGraphLaunch", "cuGraphExecDestroy", "cuGraphDestroy",
}
