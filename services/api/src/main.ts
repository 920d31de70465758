// API service entry point: config, logger, then either one API process or, with API_REPLICAS > 1,
// the cluster primary supervising that many (replicas.ts), each replica running the API below.
import cluster from 'node:cluster'
import { createLogger, loadConfigOrExit } from '@iisan/config'
import { onShutdown } from '@iisan/config/shutdown'
import { replicaRole, superviseReplicas } from './replicas.ts'

const config = loadConfigOrExit()
const logger = createLogger('api', config)
if (config.apiReplicas > 1 && cluster.isPrimary) {
  superviseReplicas({ replicas: config.apiReplicas, logger })
} else {
  const { replica, signals } = replicaRole()
  const log = cluster.isWorker ? logger.child({ replica }) : logger
  // the primary never serves: tensors and the server are loaded in the replicas only
  const [{ initBackend }, { createApiServer }] = await Promise.all([import('@iisan/model/backend'), import('./server.ts')])
  await initBackend({ logger: log, prefer: config.tfBackend })
  const server = await createApiServer(config, log, { replica })
  await server.app.listen({ port: config.port, host: config.host })
  onShutdown(log, () => server.close(), { signals })
}
