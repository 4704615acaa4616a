# The end-user prediction app (README: "Deploying"). Mount a data root holding workspaces/<name>/ at /data.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -r requirements.txt
COPY streamlit_app.py ./
COPY .streamlit/ .streamlit/
COPY core/ core/
COPY ui/ ui/
COPY app_pages/ app_pages/
ENV IMAGEDP_END_USER=1 IMAGEDP_DATA_ROOT=/data IMAGEDP_WORKSPACE=demo STREAMLIT_SERVER_MAX_UPLOAD_SIZE=50
VOLUME /data
EXPOSE 8501
CMD ["python", "-m", "streamlit", "run", "streamlit_app.py", "--server.port", "8501", "--server.address", "0.0.0.0", "--server.headless", "true"]
