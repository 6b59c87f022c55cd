// Starts kinesalite on 127.0.0.1 with a free port and prints the port on standard output.
// Usage: node kinesalite-serve.js <path to node_modules/kinesalite>
// Its own command line would listen on every interface; this binds loopback only.
const kinesalite = require(process.argv[2]);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0 });
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
// End with the test process that started us.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
