// Bundle-size entry (section 5): axios with axios-auth-refresh, as their READMEs set them up.
import axios from "axios"
import { createAuthRefresh } from "axios-auth-refresh"

const tokens = { access: "access-token", refresh: "refresh-token" }
const api = axios.create({ baseURL: "https://beta.usemoon.ai" })
api.interceptors.request.use((config) => {
  config.headers.Authorization = `Bearer ${tokens.access}`
  return config
})
createAuthRefresh(api as unknown as Parameters<typeof createAuthRefresh>[0], async () => {
  const response = await axios.post<{ access_token: string; refresh_token: string }>(
    "https://beta.usemoon.ai/auth/refresh",
    { refresh_token: tokens.refresh }
  )
  tokens.access = response.data.access_token
  tokens.refresh = response.data.refresh_token
})

api.get("/protected").then((response) => console.log(response.status), console.error)
